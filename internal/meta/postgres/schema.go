package postgres

// migrations are the schema's versions, forward only: migrations[i]
// takes the schema from version i to i+1. A released migration is never
// edited; changes are new entries. Each one must leave the schema usable
// by the previous release, so that replicas can be upgraded one by one
// (add tables and columns; never drop or rename what a running release
// reads).
//
// Times of meta records are Unix nanoseconds (as in meta/sqlite: exact
// round trips); coordination rows (leases, tombstones, multipart uploads)
// use the database's clock, shared by every replica.
var migrations = []string{
	// 1: the metadata of meta.Store.
	`
CREATE TABLE caches (
	id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	public BOOLEAN NOT NULL,
	priority INTEGER NOT NULL,
	secret_key TEXT NOT NULL,
	store_dir TEXT NOT NULL,
	created BIGINT NOT NULL
);
CREATE TABLE tokens (
	id TEXT PRIMARY KEY,
	hash BYTEA NOT NULL,
	cache_pattern TEXT NOT NULL,
	perms INTEGER NOT NULL,
	expires BIGINT NOT NULL,
	created BIGINT NOT NULL,
	note TEXT NOT NULL
);
CREATE TABLE nars (
	nar_hash TEXT PRIMARY KEY,
	nar_size BIGINT NOT NULL,
	blob_key TEXT NOT NULL,
	compression TEXT NOT NULL,
	file_hash TEXT NOT NULL,
	file_size BIGINT NOT NULL,
	listing_key TEXT NOT NULL,
	created BIGINT NOT NULL
);
CREATE INDEX nars_blob ON nars (blob_key);
CREATE INDEX nars_listing ON nars (listing_key);
CREATE TABLE uploads (
	cache_id BIGINT NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
	url TEXT NOT NULL,
	file_hash TEXT NOT NULL,
	file_size BIGINT NOT NULL,
	nar_hash TEXT NOT NULL REFERENCES nars (nar_hash),
	nar_size BIGINT NOT NULL,
	created BIGINT NOT NULL,
	PRIMARY KEY (cache_id, url)
);
CREATE INDEX uploads_nar ON uploads (nar_hash);
CREATE TABLE paths (
	cache_id BIGINT NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
	hash_part TEXT NOT NULL,
	store_path TEXT NOT NULL,
	nar_hash TEXT NOT NULL REFERENCES nars (nar_hash),
	narinfo TEXT NOT NULL,
	created BIGINT NOT NULL,
	PRIMARY KEY (cache_id, hash_part)
);
CREATE INDEX paths_nar ON paths (nar_hash, cache_id);
CREATE TABLE logs (
	cache_id BIGINT NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
	drv TEXT NOT NULL,
	blob_key TEXT NOT NULL,
	size BIGINT NOT NULL,
	created BIGINT NOT NULL,
	PRIMARY KEY (cache_id, drv)
);
CREATE INDEX logs_blob ON logs (blob_key);
`,
	// 2: coordination between replicas.
	`
-- A lease makes one replica at a time run a singleton (the garbage
-- collector, sweeps) without a lock that pins a connection.
CREATE TABLE leases (
	name TEXT PRIMARY KEY,
	holder TEXT NOT NULL,
	expires TIMESTAMPTZ NOT NULL
);
-- Blobs to delete once a grace period has passed and they are still
-- unused. reaped is set when the blob is gone, so that a writer that read
-- the blob's NAR before it was collected learns that the bytes are gone.
CREATE TABLE blob_tombstones (
	key TEXT PRIMARY KEY,
	buried TIMESTAMPTZ NOT NULL DEFAULT now(),
	reaped TIMESTAMPTZ
);
CREATE INDEX blob_tombstones_buried ON blob_tombstones (buried) WHERE reaped IS NULL;
-- silo_revive(keys) cancels the deletion of blobs that a NAR record being
-- written refers to, waiting for a reap in progress (row locks), and fails
-- with SQLSTATE SI001 if one was deleted already.
CREATE FUNCTION silo_revive(keys TEXT[]) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
	PERFORM 1 FROM blob_tombstones WHERE key = ANY(keys) AND reaped IS NOT NULL FOR UPDATE;
	IF FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'SI001', MESSAGE = 'blob deleted by the garbage collector';
	END IF;
	DELETE FROM blob_tombstones WHERE key = ANY(keys);
END
$$;
-- S3 multipart uploads in progress, recorded when started and touched at
-- every part, so that those of a crashed replica are aborted.
CREATE TABLE multipart_uploads (
	upload_id TEXT PRIMARY KEY,
	object_key TEXT NOT NULL,
	holder TEXT NOT NULL,
	started TIMESTAMPTZ NOT NULL DEFAULT now(),
	touched TIMESTAMPTZ NOT NULL DEFAULT now()
);
`,
}
