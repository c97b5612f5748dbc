package nixdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// ErrPathInUse is wrapped by the error InvalidatePathChecked returns for
// a path that valid paths still refer to.
var ErrPathInUse = errors.New("path in use")

// DerivationOutputsFunc reads the derivation drv (its file is file, the
// path on disk) while it is being registered. It must check the
// derivation's output paths as Nix's checkDerivationOutputs does
// ("derivation '%s' has incorrect output '%s', should be '%s'") and return
// the outputs whose paths are known statically (name -> path), which go
// into DerivationOutputs. It runs inside the registration transaction; an
// error rolls the whole registration back.
type DerivationOutputsFunc func(ctx context.Context, drv storepath.Path, file string) (map[string]storepath.Path, error)

const (
	sRegister   = `insert into ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) values (?, ?, ?, ?, ?, ?, ?, ?)`
	sUpdate     = `update ValidPaths set narSize = ?, hash = ?, ultimate = ?, sigs = ?, ca = ? where path = ?`
	sAddRef     = `insert or replace into Refs (referrer, reference) values (?, ?)`
	sAddDrvOut  = `insert or replace into DerivationOutputs (drv, id, path) values (?, ?, ?)`
	sInvalidate = `delete from ValidPaths where path = ?`
	qID         = `select id from ValidPaths where path = ?`
)

// RegisterValidPaths makes infos valid in one transaction, with Nix's
// registerValidPaths semantics: a path already valid has its hash, size,
// ultimate, sigs and ca updated; a new one is inserted (registration time
// now if zero) after checking that a CA it claims is true
// ("cannot add path '%s' to the Nix store because it claims to be
// content-addressed but isn't"); every reference must be valid or in
// infos ("path '%s' is not valid"); each .drv path is passed to drvOutputs
// (with its file from realPath), whose outputs are recorded; and the
// references within infos must not form a cycle ("cycle detected in the
// references of '%s' from '%s'"). On any error nothing changes.
func (d *DB) RegisterValidPaths(ctx context.Context, infos []*PathInfo, realPath func(storepath.Path) string, drvOutputs DerivationOutputsFunc) error {
	for _, info := range infos {
		if info.NarHash.Algo() != hash.SHA256 {
			return fmt.Errorf("register %s: NAR hash must be sha256, got %q", info.Path, info.NarHash.Algo())
		}
		if info.Path.Dir() != d.dir {
			return fmt.Errorf("register %s: not in the store directory %s", info.Path, d.dir)
		}
	}
	byPath := make(map[storepath.Path]*PathInfo, len(infos))
	for _, info := range infos {
		byPath[info.Path] = info
	}
	if err := topoCheck(byPath); err != nil {
		return err
	}
	return d.tx(ctx, func(tx *sql.Tx) error {
		ids := make(map[storepath.Path]int64, len(infos))
		for _, info := range infos {
			id, err := d.idOf(ctx, tx, info.Path)
			switch {
			case errors.Is(err, ErrNotValid):
				if id, err = d.insert(ctx, tx, info); err != nil {
					return err
				}
			case err != nil:
				return err
			default:
				if err := d.update(ctx, tx, info); err != nil {
					return err
				}
			}
			ids[info.Path] = id
		}
		for _, info := range infos {
			for _, r := range info.References {
				rid, ok := ids[r]
				if !ok {
					var err error
					if rid, err = d.idOf(ctx, tx, r); err != nil {
						return err
					}
					ids[r] = rid
				}
				if _, err := d.exec(ctx, tx, sAddRef, ids[info.Path], rid); err != nil {
					return fmt.Errorf("register reference from %s to %s: %w", info.Path, r, err)
				}
			}
		}
		for _, info := range infos {
			if !info.Path.IsDerivation() {
				continue
			}
			if drvOutputs == nil {
				return fmt.Errorf("cannot register derivation '%s': no derivation reader is configured (nixstore.Options.DerivationOutputs)", info.Path)
			}
			outs, err := drvOutputs(ctx, info.Path, realPath(info.Path))
			if err != nil {
				return err
			}
			names := make([]string, 0, len(outs))
			for n := range outs {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				if _, err := d.exec(ctx, tx, sAddDrvOut, ids[info.Path], n, outs[n].String()); err != nil {
					return fmt.Errorf("register output %s of %s: %w", n, info.Path, err)
				}
			}
		}
		return nil
	})
}

// exec runs a prepared statement in tx.
func (d *DB) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	s, err := d.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, s).ExecContext(ctx, args...)
}

// msgError is an error whose message is exactly Nix's, wrapping a
// sentinel callers test with errors.Is.
type msgError struct {
	msg string
	err error
}

func (e *msgError) Error() string { return e.msg }
func (e *msgError) Unwrap() error { return e.err }

func (d *DB) idOf(ctx context.Context, tx *sql.Tx, p storepath.Path) (int64, error) {
	var id int64
	err := d.query(ctx, tx, qID, func(r *sql.Row) error { return r.Scan(&id) }, p.String())
	if errors.Is(err, sql.ErrNoRows) {
		return 0, notValid(p.String())
	}
	if err != nil {
		return 0, fmt.Errorf("query %s in %s: %w", p, d.path, err)
	}
	return id, nil
}

func nullStr(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func nullInt(n int64, valid bool) sql.NullInt64 { return sql.NullInt64{Int64: n, Valid: valid} }

func (d *DB) insert(ctx context.Context, tx *sql.Tx, info *PathInfo) (int64, error) {
	if info.CA != "" && !info.ContentAddressed() {
		return 0, fmt.Errorf("cannot add path '%s' to the Nix store because it claims to be content-addressed but isn't", info.Path)
	}
	reg := info.RegistrationTime.Unix()
	if info.RegistrationTime.IsZero() || reg == 0 {
		reg = time.Now().Unix()
	}
	res, err := d.exec(ctx, tx, sRegister, info.Path.String(), "sha256:"+info.NarHash.Base16(), reg,
		nullStr(info.Deriver.String()), nullInt(int64(info.NarSize), info.NarSize != 0),
		nullInt(1, info.Ultimate), nullStr(joinSet(normSet(info.Sigs))), nullStr(info.CA))
	if err != nil {
		return 0, fmt.Errorf("register %s in %s: %w", info.Path, d.path, err)
	}
	return res.LastInsertId()
}

func (d *DB) update(ctx context.Context, tx *sql.Tx, info *PathInfo) error {
	_, err := d.exec(ctx, tx, sUpdate, nullInt(int64(info.NarSize), info.NarSize != 0), "sha256:"+info.NarHash.Base16(),
		nullInt(1, info.Ultimate), nullStr(joinSet(normSet(info.Sigs))), nullStr(info.CA), info.Path.String())
	if err != nil {
		return fmt.Errorf("update %s in %s: %w", info.Path, d.path, err)
	}
	return nil
}

// normSet returns ss sorted and unique, without empty strings.
func normSet(ss []string) []string {
	out := slices.DeleteFunc(slices.Clone(ss), func(s string) bool { return s == "" })
	slices.Sort(out)
	return slices.Compact(out)
}

// topoCheck fails if the references among infos form a cycle, with Nix's
// message (its depth-first search, in path order).
func topoCheck(infos map[storepath.Path]*PathInfo) error {
	paths := make([]storepath.Path, 0, len(infos))
	for p := range infos {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, storepath.Compare)
	visited := map[storepath.Path]bool{}
	parents := map[storepath.Path]bool{}
	var visit func(p, parent storepath.Path) error
	visit = func(p, parent storepath.Path) error {
		if parents[p] {
			return fmt.Errorf("cycle detected in the references of '%s' from '%s'", p, parent)
		}
		if visited[p] {
			return nil
		}
		visited[p], parents[p] = true, true
		for _, r := range infos[p].References {
			if _, in := infos[r]; in && r != p {
				if err := visit(r, p); err != nil {
					return err
				}
			}
		}
		delete(parents, p)
		return nil
	}
	for _, p := range paths {
		if err := visit(p, storepath.Path{}); err != nil {
			return err
		}
	}
	return nil
}

// UpdatePathInfo writes info's hash, size, ultimate, sigs and ca over the
// valid path's row (what `nix-store --verify` fills in).
func (d *DB) UpdatePathInfo(ctx context.Context, info *PathInfo) error {
	return d.tx(ctx, func(tx *sql.Tx) error { return d.update(ctx, tx, info) })
}

// AddSignatures adds sigs to the valid path p's signatures (a set union).
func (d *DB) AddSignatures(ctx context.Context, p storepath.Path, sigs []string) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		info, _, err := d.queryPathInfo(ctx, tx, p)
		if err != nil {
			return err
		}
		info.Sigs = normSet(append(info.Sigs, sigs...))
		return d.update(ctx, tx, info)
	})
}

// InvalidatePath removes p from the database (its references and
// derivation outputs go with it). The caller has checked that no other
// valid path refers to p; if one does, the foreign key refuses.
func (d *DB) InvalidatePath(ctx context.Context, p storepath.Path) error {
	return d.tx(ctx, func(tx *sql.Tx) error { return d.invalidate(ctx, tx, p) })
}

func (d *DB) invalidate(ctx context.Context, tx *sql.Tx, p storepath.Path) error {
	if _, err := d.exec(ctx, tx, sInvalidate, p.String()); err != nil {
		return fmt.Errorf("invalidate %s in %s: %w", p, d.path, err)
	}
	return nil
}

// InvalidatePathChecked removes p from the database if it is valid and no
// other valid path refers to it; otherwise it fails with ErrPathInUse
// ("cannot delete path '%s' because it is in use by '%s'").
func (d *DB) InvalidatePathChecked(ctx context.Context, p storepath.Path) error {
	return d.InvalidatePathsChecked(ctx, []storepath.Path{p})
}

// InvalidatePathsChecked invalidates paths in order in one transaction,
// each as InvalidatePathChecked (a path may be referred to by paths
// earlier in the list). On an error nothing is invalidated.
func (d *DB) InvalidatePathsChecked(ctx context.Context, paths []storepath.Path) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		for _, p := range paths {
			ok, err := d.isValid(ctx, tx, p)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			refs, err := d.queryReferrers(ctx, tx, p)
			if err != nil {
				return err
			}
			refs = slices.DeleteFunc(refs, func(r storepath.Path) bool { return r == p })
			if len(refs) > 0 {
				return &msgError{fmt.Sprintf("cannot delete path '%s' because it is in use by %s", p, showPaths(refs)), ErrPathInUse}
			}
			if err := d.invalidate(ctx, tx, p); err != nil {
				return err
			}
		}
		return nil
	})
}

// showPaths quotes and joins paths as Nix's showPaths.
func showPaths(ps []storepath.Path) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + p.String() + "'")
	}
	return b.String()
}
