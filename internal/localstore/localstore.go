// Package localstore reads path metadata from a local Nix store: from Nix's
// SQLite database, opened read-only (DB), or from nix-daemon over its
// worker protocol (Daemon). Both implement Store and answer the same
// questions with the same values.
//
// Invariants: silo never writes to a Nix store through this package (the
// database is opened with mode=ro and never checkpointed; Nix writes to it
// concurrently in WAL mode). A PathInfo is read in one consistent snapshot:
// its references belong to the same state of the store as its hash. Every
// path returned lies in the store directory the Store was opened with.
package localstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// ErrNotFound is wrapped by errors about a path that is not valid in the store.
var ErrNotFound = errors.New("path not valid in the local Nix store")

// DefaultDBPath is where Nix keeps its database unless NIX_STATE_DIR says otherwise.
const DefaultDBPath = "/nix/var/nix/db/db.sqlite"

// DefaultSocket is where nix-daemon listens unless NIX_DAEMON_SOCKET_PATH
// or NIX_STATE_DIR say otherwise.
const DefaultSocket = worker.DefaultSocket

// PathInfo is what the store knows about a valid path.
type PathInfo struct {
	Path             storepath.Path
	Deriver          storepath.Path // zero if unknown
	NarHash          hash.Hash      // sha256 of the path's NAR
	NarSize          uint64
	References       []storepath.Path      // sorted by base name; may include Path itself
	Sigs             []signature.Signature // sorted by text form, as Nix holds them
	CA               string                // content address ("fixed:r:sha256:..."), "" if input-addressed
	RegistrationTime time.Time
	Ultimate         bool // built on this machine, not substituted
}

// Store answers questions about valid paths of a local Nix store.
type Store interface {
	// QueryPathInfo returns p's metadata, or an error wrapping ErrNotFound
	// if p is not valid.
	QueryPathInfo(ctx context.Context, p storepath.Path) (*PathInfo, error)
	// QueryPathFromHashPart returns the valid path whose hash part is
	// hashPart (32 nix32 characters), or an error wrapping ErrNotFound.
	QueryPathFromHashPart(ctx context.Context, hashPart string) (storepath.Path, error)
	Close() error
}

var (
	_ Store = (*DB)(nil)
	_ Store = (*Daemon)(nil)
)

// Open opens the local store the way Nix would reach it: the database
// directly when this process may write to it (root, as Nix itself requires
// for a local store) unless NIX_REMOTE says daemon (or unix://SOCKET), and
// the daemon otherwise.
// NIX_STATE_DIR and NIX_DAEMON_SOCKET_PATH move the database and socket as
// they do for Nix.
func Open(ctx context.Context, dir storepath.Dir) (Store, error) {
	stateDir := os.Getenv("NIX_STATE_DIR")
	dbPath, socket := DefaultDBPath, DefaultSocket
	if stateDir != "" {
		dbPath = filepath.Join(stateDir, "db", "db.sqlite")
		socket = filepath.Join(stateDir, "daemon-socket", "socket")
	}
	if s := os.Getenv("NIX_DAEMON_SOCKET_PATH"); s != "" {
		socket = s
	}
	remote := os.Getenv("NIX_REMOTE")
	if path, ok := strings.CutPrefix(remote, "unix://"); ok && path != "" {
		socket = path
	}
	var dbErr error
	if remote == "" || remote == "local" || remote == "auto" {
		if f, err := os.OpenFile(dbPath, os.O_RDWR, 0); err == nil {
			f.Close()
			db, err := OpenDB(dir, dbPath)
			if err == nil {
				return db, nil
			}
			dbErr = err
		}
	}
	d, err := DialDaemon(ctx, socket, dir)
	if err != nil {
		if dbErr != nil {
			return nil, fmt.Errorf("open local Nix store: %w; and %w", dbErr, err)
		}
		return nil, fmt.Errorf("open local Nix store: %w (or run as root to read %s directly)", err, dbPath)
	}
	return d, nil
}

// Closure returns the paths reachable from roots through references,
// each once, every path after all the paths it references (dependencies
// first). The order is deterministic for a given store state.
func Closure(ctx context.Context, s Store, roots []storepath.Path) ([]*PathInfo, error) {
	infos := map[storepath.Path]*PathInfo{}
	frontier := dedup(roots)
	for len(frontier) > 0 {
		got, err := queryAll(ctx, s, frontier)
		if err != nil {
			return nil, err
		}
		var next []storepath.Path
		for i, info := range got {
			infos[frontier[i]] = info
		}
		queued := map[storepath.Path]bool{}
		for _, info := range got {
			for _, r := range info.References {
				if _, seen := infos[r]; !seen && !queued[r] {
					queued[r] = true
					next = append(next, r)
				}
			}
		}
		frontier = next
	}

	// Depth-first post-order from the roots, references in sorted order.
	order := make([]*PathInfo, 0, len(infos))
	done := make(map[storepath.Path]bool, len(infos))
	type frame struct {
		info *PathInfo
		next int
	}
	for _, root := range dedup(roots) {
		if done[root] {
			continue
		}
		done[root] = true
		stack := []frame{{info: infos[root]}}
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next < len(top.info.References) {
				r := top.info.References[top.next]
				top.next++
				if !done[r] {
					done[r] = true
					stack = append(stack, frame{info: infos[r]})
				}
				continue
			}
			order = append(order, top.info)
			stack = stack[:len(stack)-1]
		}
	}
	return order, nil
}

// queryAll fetches the infos of paths with a few queries in flight.
func queryAll(ctx context.Context, s Store, paths []storepath.Path) ([]*PathInfo, error) {
	out := make([]*PathInfo, len(paths))
	errs := make([]error, len(paths))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, p := range paths {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = s.QueryPathInfo(ctx, p)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("closure of %s: %w", paths[i], err)
		}
	}
	return out, nil
}

func dedup(ps []storepath.Path) []storepath.Path {
	seen := map[storepath.Path]bool{}
	var out []storepath.Path
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// pathInfo builds a PathInfo from the strings both sources hold,
// validating each against dir.
func pathInfo(dir storepath.Dir, p storepath.Path, narHash, deriver string, refs, sigs []string,
	narSize uint64, regTime int64, ultimate bool, ca string) (*PathInfo, error) {
	info := &PathInfo{Path: p, NarSize: narSize, CA: ca, Ultimate: ultimate, RegistrationTime: time.Unix(regTime, 0)}
	var err error
	if info.NarHash, err = hash.ParseAs(narHash, hash.SHA256); err != nil {
		return nil, fmt.Errorf("path info of %s: NAR hash: %w", p, err)
	}
	if deriver != "" {
		if info.Deriver, err = dir.Parse(deriver); err != nil {
			return nil, fmt.Errorf("path info of %s: deriver: %w", p, err)
		}
	}
	info.References = make([]storepath.Path, 0, len(refs))
	for _, r := range refs {
		rp, err := dir.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("path info of %s: reference: %w", p, err)
		}
		info.References = append(info.References, rp)
	}
	slices.SortFunc(info.References, storepath.Compare)
	info.References = slices.Compact(info.References)
	sigs = slices.Clone(sigs)
	slices.Sort(sigs)
	for _, s := range slices.Compact(sigs) {
		if s == "" {
			continue
		}
		sig, err := signature.ParseSignature(s)
		if err != nil {
			return nil, fmt.Errorf("path info of %s: signature: %w", p, err)
		}
		info.Sigs = append(info.Sigs, sig)
	}
	return info, nil
}
