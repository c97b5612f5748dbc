package daemon

import (
	"context"
	"errors"

	"github.com/silo-cache/silo/internal/nixdb"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// wireInfo converts the store's path info to the protocol's.
func wireInfo(info *nixstore.PathInfo) *worker.PathInfo {
	w := &worker.PathInfo{
		NarHash:  info.NarHash.Base16(),
		NarSize:  info.NarSize,
		Ultimate: info.Ultimate,
		Sigs:     info.Sigs,
		CA:       info.CA,
	}
	if !info.Deriver.IsZero() {
		w.Deriver = info.Deriver.String()
	}
	if !info.RegistrationTime.IsZero() {
		w.RegistrationTime = uint64(info.RegistrationTime.Unix())
	}
	w.References = make([]string, len(info.References))
	for i, r := range info.References {
		w.References[i] = r.String()
	}
	if w.Sigs == nil {
		w.Sigs = []string{}
	}
	return w
}

func opIsValidPath(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	ok, err := c.store.IsValid(ctx, p)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Bool(ok)
	return nil
}

func opQueryValidPaths(ctx context.Context, c *conn) error {
	paths, err := c.readPaths()
	if err != nil {
		return err
	}
	substitute := false
	if c.minor >= 27 {
		v, err := c.dec.Uint32()
		if err != nil {
			return err
		}
		substitute = v != 0
	}
	if err := c.startWork(); err != nil {
		return err
	}
	if substitute {
		c.substitutePaths(ctx, paths) // op_subst.go
	}
	valid, err := c.store.QueryValidPaths(ctx, paths)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.writePaths(valid)
	return nil
}

// opQueryPathInfo answers a validity flag and the info (protocol ≥ 1.17);
// older clients get an error for an invalid path, as Nix.
func opQueryPathInfo(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	info, err := c.store.QueryPathInfo(ctx, p)
	if err != nil && (!errors.Is(err, nixstore.ErrNotValid) || c.minor < 17) {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	if info == nil {
		c.enc.Bool(false)
		return nil
	}
	if c.minor >= 17 {
		c.enc.Bool(true)
	}
	c.enc.WritePathInfo("", wireInfo(info), false, c.minor)
	return nil
}

// pathSetOp serves an operation that maps a path to a set of paths.
func pathSetOp(op worker.Op) handler {
	return func(ctx context.Context, c *conn) error { return queryPathSet(ctx, c, op) }
}

func queryPathSet(ctx context.Context, c *conn, op worker.Op) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	var paths []storepath.Path
	switch op {
	case worker.OpQueryReferences:
		var info *nixstore.PathInfo
		if info, err = c.store.QueryPathInfo(ctx, p); err == nil {
			paths = info.References
		}
	case worker.OpQueryReferrers:
		paths, err = c.store.QueryReferrers(ctx, p)
	case worker.OpQueryValidDerivers:
		paths, err = c.store.QueryValidDerivers(ctx, p)
	case worker.OpQueryDerivationOutputs:
		var m map[string]storepath.Path
		if m, err = c.store.QueryDerivationOutputs(ctx, p); err == nil {
			paths = sortedPaths(m)
		}
	}
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.writePaths(paths)
	return nil
}

func sortedPaths(m map[string]storepath.Path) []storepath.Path {
	var ps []storepath.Path
	seen := map[storepath.Path]bool{}
	for _, p := range m {
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	sortPaths(ps)
	return ps
}

func opQueryPathHash(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	info, err := c.store.QueryPathInfo(ctx, p)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.String(info.NarHash.Base16())
	return nil
}

func opQueryDeriver(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	info, err := c.store.QueryPathInfo(ctx, p)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	if info.Deriver.IsZero() {
		c.enc.String("")
	} else {
		c.enc.String(info.Deriver.String())
	}
	return nil
}

func opQueryAllValidPaths(ctx context.Context, c *conn) error {
	if err := c.startWork(); err != nil {
		return err
	}
	paths, err := c.store.QueryAllValidPaths(ctx)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.writePaths(paths)
	return nil
}

func opQueryPathFromHashPart(ctx context.Context, c *conn) error {
	hashPart, err := c.dec.String()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	if len(hashPart) != storepath.HashLen {
		return errors.New("invalid hash part")
	}
	p, err := c.store.QueryPathFromHashPart(ctx, hashPart)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	if p.IsZero() {
		c.enc.String("")
	} else {
		c.enc.String(p.String())
	}
	return nil
}

func opQueryRealisation(ctx context.Context, c *conn) error {
	if err := c.startWork(); err != nil {
		return err
	}
	s, err := c.dec.String()
	if err != nil {
		return err
	}
	id, err := nixdb.ParseDrvOutput(s)
	if err != nil {
		return err
	}
	r, err := c.store.QueryRealisation(ctx, id)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	if r == nil {
		c.enc.Uint64(0)
		return nil
	}
	c.enc.Uint64(1)
	if c.minor < 31 {
		c.enc.String(r.OutPath.String())
		return nil
	}
	js, err := wireRealisation(r).JSON()
	if err != nil {
		return err
	}
	c.enc.String(js)
	return nil
}

func wireRealisation(r *nixdb.Realisation) worker.Realisation {
	w := worker.Realisation{ID: r.ID.String(), OutPath: r.OutPath.Base(), Signatures: r.Signatures,
		DependentRealisations: map[string]string{}}
	for id, p := range r.DependentRealisations {
		w.DependentRealisations[id.String()] = p.Base()
	}
	return w
}
