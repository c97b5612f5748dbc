// Package adminapi is silo's administration: creating, listing and
// deleting caches and tokens, both for the admin commands working on a
// local data directory (Local) and as a JSON API over HTTP that silo serve
// mounts under /_silo/api/v1/ (Handler), with a Client for it. The same
// Service holds the rules either way.
//
// Invariants:
//   - Every API request but whoami and a public cache's info presents a
//     valid token (checked in constant time against its stored hash, as
//     the cache server does); an admin action on a cache needs admin on
//     it, and managing tokens needs admin over their whole pattern, so a
//     token never creates, sees or revokes a token wider than itself.
//   - Deleting a cache revokes the tokens bound to exactly its name (a new
//     cache of that name starts with none) and reports the pattern tokens
//     that would match such a cache.
//   - Secrets leave only once: a new token's text is in the response that
//     creates it; signing keys never leave the server.
//
// Adding a resource (pins, collections): a file with its Service methods
// and a routes function registered in Handler's resource list.
package adminapi

import "time"

// Prefix is where silo serve mounts the API.
const Prefix = "/_silo/api/v1/"

// CacheSpec asks for a new cache.
type CacheSpec struct {
	Name     string `json:"name"`
	Public   bool   `json:"public"`
	Priority int    `json:"priority"`            // 0: 40
	KeyName  string `json:"key_name,omitempty"`  // "": <host>-<name>-1
	StoreDir string `json:"store_dir,omitempty"` // "": /nix/store
}

// CacheInfo describes a cache: what clients need, and what it holds.
type CacheInfo struct {
	Name        string    `json:"name"`
	Public      bool      `json:"public"`
	Priority    int       `json:"priority"`
	PublicKey   string    `json:"public_key"`
	StoreDir    string    `json:"store_dir"`
	URL         string    `json:"url,omitempty"` // substituter URL; "" if the server's URL is unknown
	Created     time.Time `json:"created"`
	Paths       int64     `json:"paths"`
	NarBytes    int64     `json:"nar_bytes"`
	StoredBytes int64     `json:"stored_bytes"`
}

// TokenSpec asks for a new token.
type TokenSpec struct {
	Cache   string    `json:"cache"` // name or glob pattern
	Perms   []string  `json:"perms"` // "pull", "push", "admin"
	Expires time.Time `json:"expires,omitzero"`
	Note    string    `json:"note,omitempty"`
}

// TokenInfo describes a token, never its secret.
type TokenInfo struct {
	ID      string    `json:"id"`
	Cache   string    `json:"cache"` // the pattern it grants on
	Perms   []string  `json:"perms"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Note    string    `json:"note,omitempty"`
}

// NewToken is a created token: its text, shown once.
type NewToken struct {
	Token    string    `json:"token"`
	Info     TokenInfo `json:"info"`
	Warnings []string  `json:"warnings,omitempty"` // e.g. the pattern matches no cache
}

// DeleteResult says what deleting a cache did, or (DryRun) would do.
type DeleteResult struct {
	Cache   CacheInfo   `json:"cache"`
	DryRun  bool        `json:"dry_run,omitempty"`
	Revoked []TokenInfo `json:"revoked"` // bound to exactly the cache's name
	// Matching tokens have a pattern that matches the name: they are not
	// revoked and would grant access to a new cache of the same name.
	Matching []TokenInfo `json:"matching"`
}

// Whoami is what the token presented grants.
type Whoami struct {
	Token  TokenInfo   `json:"token"`
	Caches []CacheInfo `json:"caches"` // existing caches its pattern matches
}

// errorBody is every error response.
type errorBody struct {
	Error string `json:"error"`
}
