package daemon

import (
	"context"
	"fmt"

	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// openStore opens the connection's store, as Nix opens a LocalStore per
// connection: missing directories and the database are created, and the
// store-level settings (require-sigs, trusted keys) are the daemon's, not
// the client's. Then, as Nix's authentication hook, it creates the
// connecting user's profile and GC root directories.
func (c *conn) openStore(ctx context.Context) error {
	if c.srv.opts.Store.Socket != "" {
		return fmt.Errorf("silo daemon serves a local store, not the daemon at %s (set store = local or a path)", c.srv.opts.Store.Socket)
	}
	o, err := storeOptions(c.srv.opts.Store, c.settings, c.warn)
	if err != nil {
		return err
	}
	o.Log = c.storeLog
	o.DerivationOutputs = c.derivationOutputs
	if c.srv.autoGC != nil {
		o.AutoGC = c.srv.autoGC.Check
	}
	// One Open at a time: opening a fresh (or freshly deleted) store
	// creates the database and its schema file, which a second connection
	// opening at the same moment must not read half-written.
	c.srv.openMu.Lock()
	c.store, err = nixstore.Open(ctx, o)
	c.srv.openMu.Unlock()
	if err != nil {
		return err
	}
	c.dir = c.store.Dir()
	if c.peer.UID >= 0 && c.peer.User != "" {
		if err := c.store.CreateUser(c.peer.User, c.peer.UID); err != nil {
			return err
		}
	}
	return nil
}

// storeOptions translates Nix's settings into the store's options.
func storeOptions(u *StoreURI, s *nixconf.Settings, warn func(string)) (nixstore.Options, error) {
	dir, err := storepath.NewDir(u.StoreDir)
	if err != nil {
		return nixstore.Options{}, fmt.Errorf("store directory: %w", err)
	}
	o := nixstore.DefaultOptions(dir, u.StateDir, u.LogDir)
	o.RealStoreDir = u.RealStoreDir
	o.FsyncMetadata = s.Bool("fsync-metadata")
	o.SyncBeforeRegistering = s.Bool("sync-before-registering")
	o.CADerivations = s.Feature("ca-derivations")
	o.ReservedSize = s.Int("gc-reserved-space")
	o.BuildUsersGroup = s.String("build-users-group")
	o.AllowSymlinkedStore = s.Bool("allow-symlinked-store")
	o.IgnoredACLs = s.List("ignored-acls")
	o.RequireSigs = s.Bool("require-sigs")
	o.TrustedKeys = trustedKeys(s, warn)
	return o, nil
}

// trustedKeys are trusted-public-keys plus the public halves of the
// secret-key-files that can be read, as Nix's getDefaultPublicKeys.
// A key that does not parse is skipped with a warning.
func trustedKeys(s *nixconf.Settings, warn func(string)) *signature.KeySet {
	var keys []signature.PublicKey
	for _, k := range s.List("trusted-public-keys") {
		pk, err := signature.ParsePublicKey(k)
		if err != nil {
			warn(fmt.Sprintf("ignoring the trusted public key '%s': %v", k, err))
			continue
		}
		keys = append(keys, pk)
	}
	for _, f := range s.List("secret-key-files") {
		sk, err := signature.LoadSecretKeyFile(f)
		if err != nil {
			continue // Nix ignores unreadable key files here
		}
		keys = append(keys, sk.Public())
	}
	return signature.NewKeySet(keys...)
}
