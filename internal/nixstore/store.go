// Package nixstore is Nix 2.8's local store engine on Nix's own on-disk
// layout: the store directory, the state directory (db, temproots,
// gcroots, profiles, gc.lock) and the log directory, shared with the real
// Nix running at the same time.
//
// Invariants:
//   - Open does what LocalStore's constructor does (creates missing
//     directories, the reserved-space file, the database) and is meant to
//     be called per daemon connection: a store or state directory deleted
//     under a running daemon is re-created by the next Open.
//   - Nothing becomes valid before it is complete and verified. A NAR (or
//     dump) is restored under a temporary store-path name in the store
//     directory (temp-rooted, so no garbage collector deletes it), checked
//     (NAR hash and size, the content address, references valid), created
//     canonical (modes 0444/0555, mtime 1, owner), then renamed into place
//     while the path's lock is held, and registered in the database last.
//     A text held in memory is written straight to its path under the
//     lock (the path is invalid until registered). On any error or
//     cancelled context what was written is removed and the path stays
//     invalid.
//   - Path locks are Nix's: flock on <realpath>.lock, created 0600,
//     re-tried when the file turned out to be deleted ("d" written by the
//     releaser), deleted on release. Two adds of one path serialise on it,
//     the second finds the path valid and writes nothing.
//   - Temp roots are Nix's: each Store owns one file temproots/<n> (n a
//     number no process id reaches), exclusively flocked while the Store
//     is open, holding NUL-terminated paths; a root is appended under a
//     shared non-blocking flock on gc.lock, or, when a collector holds it,
//     first sent to the collector's gc-socket. Close unlinks the file: a
//     connection's temp roots vanish with it.
//   - Who deletes: only the garbage collector (package nixgc), repair
//     (VerifyStore, add with repair) and failed adds (their own temporary
//     trees) delete under the store directory.
//   - No state is cached across calls: the real Nix changes the same
//     database and directories concurrently.
package nixstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/silo-cache/silo/internal/nixdb"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// PathInfo is what the store knows about a valid path.
type PathInfo = nixdb.PathInfo

// ErrNotValid is wrapped by errors about a path that is not valid.
var ErrNotValid = nixdb.ErrNotValid

// Verbosity is Nix's log level, as the daemon protocol carries it.
type Verbosity int

// Nix's verbosity levels.
const (
	LvlError Verbosity = iota
	LvlWarn
	LvlNotice
	LvlInfo
	LvlTalkative
	LvlChatty
	LvlDebug
	LvlVomit
)

// Options configure a Store. Their zero values are noted; DefaultOptions
// returns Nix's defaults for the usual directories.
type Options struct {
	// StoreDir is the store directory paths are named in (NIX_STORE_DIR).
	StoreDir storepath.Dir
	// RealStoreDir is where the store lies on disk; "" means StoreDir.
	// (It differs for chroot stores such as `--store /tmp/root`.)
	RealStoreDir string
	// StateDir is Nix's state directory (NIX_STATE_DIR, /nix/var/nix).
	StateDir string
	// LogDir is Nix's log directory (NIX_LOG_DIR, /nix/var/log/nix).
	LogDir string

	// FsyncMetadata is fsync-metadata (Nix's default: true).
	FsyncMetadata bool
	// SyncBeforeRegistering is sync-before-registering (default false):
	// sync(2) before new paths become valid.
	SyncBeforeRegistering bool
	// CADerivations enables the ca-derivations tables and realisations.
	CADerivations bool
	// ReservedSize is gc-reserved-space (Nix's default 8 MiB): the size of
	// db/reserved, deleted before a collection frees space.
	ReservedSize int64
	// BuildUsersGroup is build-users-group: when set and running as root,
	// the store directory gets owner root, this group and mode 01775.
	BuildUsersGroup string
	// AllowSymlinkedStore is allow-symlinked-store (NIX_IGNORE_SYMLINK_STORE).
	AllowSymlinkedStore bool
	// IgnoredACLs is ignored-acls: extended attributes canonicalisation
	// keeps. nil means Nix's default (security.selinux, system.nfs4_acl).
	IgnoredACLs []string

	// RequireSigs is require-sigs: AddToStoreNar with CheckSigs refuses a
	// path that is neither content-addressed nor signed by TrustedKeys.
	RequireSigs bool
	// TrustedKeys are trusted-public-keys (plus the public halves of
	// secret-key-files), as the store snapshots them when opened.
	TrustedKeys *signature.KeySet

	// DerivationOutputs reads and checks .drv files as they are registered
	// (Nix's checkDerivationOutputs and the DerivationOutputs table). The
	// daemon wires it to the derivation package; while it is nil,
	// registering a .drv path fails with an error saying so.
	DerivationOutputs nixdb.DerivationOutputsFunc
	// AutoGC runs before content is written, as Nix's autoGC (min-free /
	// max-free); nil means no automatic collection. Package nixgc
	// provides it.
	AutoGC func(ctx context.Context)
	// RepairPath restores a valid path's contents from elsewhere
	// (substituters, or rebuilding its deriver) for VerifyStore with
	// repair; nil means no way to repair ("cannot repair path '%s'").
	RepairPath func(ctx context.Context, p storepath.Path) error
	// Log receives Nix's messages at their level; nil discards them.
	Log func(level Verbosity, msg string)
}

// DefaultOptions returns Nix 2.8's defaults for a store in storeDir with
// the given state and log directories.
func DefaultOptions(storeDir storepath.Dir, stateDir, logDir string) Options {
	return Options{
		StoreDir:      storeDir,
		StateDir:      stateDir,
		LogDir:        logDir,
		FsyncMetadata: true,
		ReservedSize:  8 << 20,
		RequireSigs:   true,
		TrustedKeys:   signature.NewKeySet(),
	}
}

// Store is an open local store. It is safe for concurrent use; it owns one
// database connection, one temp-roots file and one gc.lock descriptor.
// Close it when the connection it serves ends.
type Store struct {
	opts     Options
	realDir  string
	db       *nixdb.DB
	userName string
	uid      int

	rootsMu   sync.Mutex // serialises temp-root additions (one gc.lock fd)
	roots     *tempRoots
	closeOnce sync.Once
}

// Open opens the store, first creating what is missing as Nix's
// LocalStore constructor does (see package doc).
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.StoreDir == "" || o.StateDir == "" {
		return nil, errors.New("open Nix store: StoreDir and StateDir are required")
	}
	if o.IgnoredACLs == nil {
		o.IgnoredACLs = []string{"security.selinux", "system.nfs4_acl"}
	}
	if o.TrustedKeys == nil {
		o.TrustedKeys = signature.NewKeySet()
	}
	s := &Store{opts: o, realDir: o.RealStoreDir, uid: os.Geteuid()}
	if s.realDir == "" {
		s.realDir = string(o.StoreDir)
	}
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	switch {
	case err == nil:
		s.userName = u.Username
	case os.Getenv("USER") != "":
		s.userName = os.Getenv("USER")
	default:
		return nil, fmt.Errorf("open Nix store: cannot figure out user name: %w", err)
	}
	if err := s.ensureLayout(); err != nil {
		return nil, err
	}
	dbDir := filepath.Join(o.StateDir, "db")
	s.db, err = nixdb.Open(ctx, nixdb.Options{
		StoreDir:      o.StoreDir,
		Dir:           dbDir,
		FsyncMetadata: o.FsyncMetadata,
		CADerivations: o.CADerivations,
		Log:           func(m string) { s.logf(LvlInfo, "%s", m) },
	})
	if err != nil {
		return nil, err
	}
	s.roots = newTempRoots(filepath.Join(o.StateDir, "temproots"), filepath.Join(o.StateDir, "gc.lock"),
		filepath.Join(o.StateDir, "gc-socket", "socket"))
	return s, nil
}

// Close releases the store: its temp roots vanish (the file is unlinked),
// the database is closed.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.roots.close()
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// Log sends a message to Options.Log.
func (s *Store) Log(level Verbosity, format string, args ...any) { s.logf(level, format, args...) }

func (s *Store) logf(level Verbosity, format string, args ...any) {
	if s.opts.Log != nil {
		s.opts.Log(level, fmt.Sprintf(format, args...))
	}
}

// Options returns the options the store was opened with.
func (s *Store) Options() Options { return s.opts }

// Dir returns the store directory.
func (s *Store) Dir() storepath.Dir { return s.opts.StoreDir }

// RealStoreDir returns where the store lies on disk.
func (s *Store) RealStoreDir() string { return s.realDir }

// StateDir returns Nix's state directory.
func (s *Store) StateDir() string { return s.opts.StateDir }

// RealPath returns where p lies on disk.
func (s *Store) RealPath(p storepath.Path) string { return s.realDir + "/" + p.Base() }

// DB returns the store's database, for queries and for the garbage
// collector. Writing through it bypasses locks and checks; use the
// Store's methods to add content.
func (s *Store) DB() *nixdb.DB { return s.db }

// ParsePath parses a full store path in the store's directory.
func (s *Store) ParsePath(full string) (storepath.Path, error) { return s.opts.StoreDir.Parse(full) }

// QueryPathInfo returns p's metadata, or an error wrapping ErrNotValid.
func (s *Store) QueryPathInfo(ctx context.Context, p storepath.Path) (*PathInfo, error) {
	return s.db.QueryPathInfo(ctx, p)
}

// IsValid reports whether p is valid.
func (s *Store) IsValid(ctx context.Context, p storepath.Path) (bool, error) {
	return s.db.IsValid(ctx, p)
}

// QueryValidPaths returns those of paths that are valid, sorted.
func (s *Store) QueryValidPaths(ctx context.Context, paths []storepath.Path) ([]storepath.Path, error) {
	return s.db.QueryValidPaths(ctx, paths)
}

// QueryAllValidPaths returns every valid path, sorted.
func (s *Store) QueryAllValidPaths(ctx context.Context) ([]storepath.Path, error) {
	return s.db.QueryAllValidPaths(ctx)
}

// QueryReferrers returns the valid paths referring to p, sorted.
func (s *Store) QueryReferrers(ctx context.Context, p storepath.Path) ([]storepath.Path, error) {
	return s.db.QueryReferrers(ctx, p)
}

// QueryValidDerivers returns the valid derivations with output p, sorted.
func (s *Store) QueryValidDerivers(ctx context.Context, p storepath.Path) ([]storepath.Path, error) {
	return s.db.QueryValidDerivers(ctx, p)
}

// QueryDerivationOutputs returns the statically known outputs of the valid
// derivation drv (ErrNotValid if it is not valid).
func (s *Store) QueryDerivationOutputs(ctx context.Context, drv storepath.Path) (map[string]storepath.Path, error) {
	return s.db.QueryDerivationOutputs(ctx, drv)
}

// QueryPathFromHashPart returns the valid path with this hash part, or
// the zero Path.
func (s *Store) QueryPathFromHashPart(ctx context.Context, hashPart string) (storepath.Path, error) {
	return s.db.QueryPathFromHashPart(ctx, hashPart)
}

// QueryRealisation returns the realisation of id, or nil.
func (s *Store) QueryRealisation(ctx context.Context, id nixdb.DrvOutput) (*nixdb.Realisation, error) {
	return s.db.QueryRealisation(ctx, id)
}

// RegisterRealisation records a CA derivation output's realisation.
func (s *Store) RegisterRealisation(ctx context.Context, r *nixdb.Realisation) error {
	return s.db.RegisterRealisation(ctx, r)
}

// AddSignatures adds sigs to the valid path p (a set union).
func (s *Store) AddSignatures(ctx context.Context, p storepath.Path, sigs []string) error {
	return s.db.AddSignatures(ctx, p, sigs)
}
