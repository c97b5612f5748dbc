package sqlite

import (
	"context"
	"fmt"

	"github.com/silo-cache/silo/internal/meta"
)

// exportPage is how many records one query of an export reads, so that no
// read transaction stays open while the caller works on the records.
const exportPage = 1000

// EachNAR calls fn for every stored NAR, in NarHash order (silo
// migrate-data reads an installation with it).
func (s *Store) EachNAR(ctx context.Context, fn func(meta.NAR) error) error {
	after := ""
	for {
		rows, err := s.db.QueryContext(ctx, `SELECT `+narCols+` FROM nars WHERE nar_hash > ? ORDER BY nar_hash LIMIT ?`, after, exportPage)
		if err != nil {
			return fmt.Errorf("export NARs: %w", err)
		}
		var page []meta.NAR
		for rows.Next() {
			n, err := scanNAR(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("export NARs: %w", err)
			}
			page = append(page, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("export NARs: %w", err)
		}
		for _, n := range page {
			if err := fn(n); err != nil {
				return err
			}
		}
		if len(page) < exportPage {
			return nil
		}
		after = page[len(page)-1].NarHash
	}
}

// EachPath calls fn for every path of every cache, ordered by cache ID
// and hash part.
func (s *Store) EachPath(ctx context.Context, fn func(meta.Path) error) error {
	var afterCache int64 = -1
	afterHash := ""
	for {
		rows, err := s.db.QueryContext(ctx, `SELECT cache_id, hash_part, store_path, nar_hash, narinfo, created FROM paths
			WHERE (cache_id, hash_part) > (?, ?) ORDER BY cache_id, hash_part LIMIT ?`, afterCache, afterHash, exportPage)
		if err != nil {
			return fmt.Errorf("export paths: %w", err)
		}
		var page []meta.Path
		for rows.Next() {
			var p meta.Path
			var created int64
			if err := rows.Scan(&p.CacheID, &p.HashPart, &p.StorePath, &p.NarHash, &p.NarInfo, &created); err != nil {
				rows.Close()
				return fmt.Errorf("export paths: %w", err)
			}
			p.Created = fromNanos(created)
			page = append(page, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("export paths: %w", err)
		}
		for _, p := range page {
			if err := fn(p); err != nil {
				return err
			}
		}
		if len(page) < exportPage {
			return nil
		}
		afterCache, afterHash = page[len(page)-1].CacheID, page[len(page)-1].HashPart
	}
}

// EachLog calls fn for every build log of every cache.
func (s *Store) EachLog(ctx context.Context, fn func(meta.Log) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT cache_id, drv, blob_key, size, created FROM logs ORDER BY cache_id, drv`)
	if err != nil {
		return fmt.Errorf("export logs: %w", err)
	}
	var all []meta.Log
	for rows.Next() {
		var l meta.Log
		var created int64
		if err := rows.Scan(&l.CacheID, &l.Drv, &l.BlobKey, &l.Size, &created); err != nil {
			rows.Close()
			return fmt.Errorf("export logs: %w", err)
		}
		l.Created = fromNanos(created)
		all = append(all, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export logs: %w", err)
	}
	for _, l := range all {
		if err := fn(l); err != nil {
			return err
		}
	}
	return nil
}
