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
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// PathInfo is a row of ValidPaths with its references: Nix's ValidPathInfo.
type PathInfo struct {
	Path    storepath.Path
	Deriver storepath.Path // zero if unknown
	NarHash hash.Hash      // sha256 of the path's NAR
	NarSize uint64         // 0 if unknown (stores from before Nix 1.x)
	// References are sorted by base name and unique; they may include Path
	// itself (a self-reference).
	References []storepath.Path
	// Sigs are the signatures as Nix keeps them: strings "name:base64",
	// sorted and unique, not parsed (Nix accepts any string here).
	Sigs []string
	// CA is the content address as Nix renders it ("fixed:r:sha256:<nix32>",
	// "text:sha256:<nix32>"), "" for input-addressed paths.
	CA string
	// RegistrationTime is when the path became valid; the zero Time means
	// "now" when registering.
	RegistrationTime time.Time
	Ultimate         bool // built locally, not copied from elsewhere
}

// Fingerprint returns the string Nix signs for info.
func (info *PathInfo) Fingerprint() string {
	return narinfo.Fingerprint(info.Path, info.NarHash, info.NarSize, info.References)
}

// ContentAddressed reports whether info's CA is true of its path: the
// store path computed from the CA, name and references is info.Path (Nix's
// ValidPathInfo::isContentAddressed). A CA that does not parse is false.
func (info *PathInfo) ContentAddressed() bool {
	if info.CA == "" {
		return false
	}
	ca, err := narinfo.ParseCA(info.CA)
	if err != nil {
		return false
	}
	p, err := ca.Path(info.Path.Dir(), info.Path.Name(), info.References, info.Path)
	return err == nil && p == info.Path
}

const qPathInfo = `select id, hash, registrationTime, deriver, narSize, ultimate, sigs, ca,
	(select group_concat(r.path, ' ') from Refs join ValidPaths r on r.id = Refs.reference where Refs.referrer = v.id)
	from ValidPaths v where v.path = ?`

// QueryPathInfo returns p's row, or an error wrapping ErrNotValid.
func (d *DB) QueryPathInfo(ctx context.Context, p storepath.Path) (*PathInfo, error) {
	info, _, err := d.queryPathInfo(ctx, nil, p)
	return info, err
}

// queryPathInfo reads p's row (in tx if not nil) and also returns its id.
func (d *DB) queryPathInfo(ctx context.Context, tx *sql.Tx, p storepath.Path) (*PathInfo, int64, error) {
	var (
		id, regTime             int64
		narHash                 string
		deriver, sigs, ca, refs sql.NullString
		narSize, ultimate       sql.NullInt64
	)
	err := d.query(ctx, tx, qPathInfo, func(r *sql.Row) error {
		return r.Scan(&id, &narHash, &regTime, &deriver, &narSize, &ultimate, &sigs, &ca, &refs)
	}, p.String())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, notValid(p.String())
	}
	if err != nil {
		return nil, 0, fmt.Errorf("query path info of %s in %s: %w", p, d.path, err)
	}
	info := &PathInfo{Path: p, RegistrationTime: time.Unix(regTime, 0), Ultimate: ultimate.Int64 == 1}
	if narSize.Int64 > 0 {
		info.NarSize = uint64(narSize.Int64)
	}
	bad := func(what string, err error) (*PathInfo, int64, error) {
		return nil, 0, fmt.Errorf("invalid-path entry for '%s': %s: %w", p, what, err)
	}
	if info.NarHash, err = hash.Parse(narHash); err != nil {
		return bad("hash", err)
	}
	if deriver.Valid {
		if info.Deriver, err = d.dir.Parse(deriver.String); err != nil {
			return bad("deriver", err)
		}
	}
	if sigs.Valid {
		info.Sigs = splitSet(sigs.String)
	}
	if ca.Valid {
		c, err := narinfo.ParseCA(ca.String)
		if err != nil {
			return bad("ca", err)
		}
		info.CA = c.String()
	}
	if refs.Valid {
		if info.References, err = d.parsePaths(strings.Fields(refs.String)); err != nil {
			return bad("reference", err)
		}
	}
	return info, id, nil
}

// query runs a one-row query, in tx if not nil.
func (d *DB) query(ctx context.Context, tx *sql.Tx, q string, scan func(*sql.Row) error, args ...any) error {
	run := func() error {
		s, err := d.stmt(ctx, q)
		if err != nil {
			return err
		}
		if tx != nil {
			s = tx.StmtContext(ctx, s)
		}
		return scan(s.QueryRowContext(ctx, args...))
	}
	if tx != nil {
		return run()
	}
	return d.retry(ctx, run)
}

// queryStrings runs a query returning one text column, in tx if not nil.
func (d *DB) queryStrings(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]string, error) {
	var out []string
	run := func() error {
		out = out[:0]
		s, err := d.stmt(ctx, q)
		if err != nil {
			return err
		}
		if tx != nil {
			s = tx.StmtContext(ctx, s)
		}
		rows, err := s.QueryContext(ctx, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	}
	if tx != nil {
		return out, run()
	}
	return out, d.retry(ctx, run)
}

func (d *DB) parsePaths(ss []string) ([]storepath.Path, error) {
	ps := make([]storepath.Path, 0, len(ss))
	for _, s := range ss {
		p, err := d.dir.Parse(s)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	slices.SortFunc(ps, storepath.Compare)
	return slices.Compact(ps), nil
}

const qIsValid = `select 1 from ValidPaths where path = ?`

// IsValid reports whether p is a valid path.
func (d *DB) IsValid(ctx context.Context, p storepath.Path) (bool, error) {
	return d.isValid(ctx, nil, p)
}

func (d *DB) isValid(ctx context.Context, tx *sql.Tx, p storepath.Path) (bool, error) {
	var one int
	err := d.query(ctx, tx, qIsValid, func(r *sql.Row) error { return r.Scan(&one) }, p.String())
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("query validity of %s in %s: %w", p, d.path, err)
	}
	return true, nil
}

// QueryValidPaths returns those of paths that are valid, sorted.
func (d *DB) QueryValidPaths(ctx context.Context, paths []storepath.Path) ([]storepath.Path, error) {
	var out []storepath.Path
	for _, p := range paths {
		ok, err := d.IsValid(ctx, p)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, storepath.Compare)
	return slices.Compact(out), nil
}

const qReferrers = `select path from Refs join ValidPaths on referrer = id where reference = (select id from ValidPaths where path = ?)`

// QueryReferrers returns the valid paths that refer to p (p itself if it
// refers to itself), sorted; none if p is not valid.
func (d *DB) QueryReferrers(ctx context.Context, p storepath.Path) ([]storepath.Path, error) {
	return d.queryReferrers(ctx, nil, p)
}

func (d *DB) queryReferrers(ctx context.Context, tx *sql.Tx, p storepath.Path) ([]storepath.Path, error) {
	ss, err := d.queryStrings(ctx, tx, qReferrers, p.String())
	if err != nil {
		return nil, fmt.Errorf("query referrers of %s in %s: %w", p, d.path, err)
	}
	return d.parsePaths(ss)
}

const qValidDerivers = `select v.path from DerivationOutputs d join ValidPaths v on d.drv = v.id where d.path = ?`

// QueryValidDerivers returns the valid derivations that have p as an
// output, sorted.
func (d *DB) QueryValidDerivers(ctx context.Context, p storepath.Path) ([]storepath.Path, error) {
	ss, err := d.queryStrings(ctx, nil, qValidDerivers, p.String())
	if err != nil {
		return nil, fmt.Errorf("query valid derivers of %s in %s: %w", p, d.path, err)
	}
	return d.parsePaths(ss)
}

const qDerivationOutputs = `select d.id, d.path from DerivationOutputs d join ValidPaths v on d.drv = v.id where v.path = ?`

// QueryDerivationOutputs returns the DerivationOutputs rows of the valid
// derivation drv: output name -> output path, for the outputs whose path
// is known statically. It fails with ErrNotValid if drv is not valid.
// (Outputs of floating CA derivations come from realisations; combining
// them with the .drv's output names is the caller's.)
func (d *DB) QueryDerivationOutputs(ctx context.Context, drv storepath.Path) (map[string]storepath.Path, error) {
	out := map[string]storepath.Path{}
	err := d.retry(ctx, func() error {
		clear(out)
		ok, err := d.IsValid(ctx, drv)
		if err != nil {
			return err
		}
		if !ok {
			return notValid(drv.String())
		}
		s, err := d.stmt(ctx, qDerivationOutputs)
		if err != nil {
			return err
		}
		rows, err := s.QueryContext(ctx, drv.String())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name, path string
			if err := rows.Scan(&name, &path); err != nil {
				return err
			}
			p, err := d.dir.Parse(path)
			if err != nil {
				return fmt.Errorf("output %q: %w", name, err)
			}
			out[name] = p
		}
		return rows.Err()
	})
	if errors.Is(err, ErrNotValid) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("query derivation outputs of %s in %s: %w", drv, d.path, err)
	}
	return out, nil
}

const qPathFromHashPart = `select path from ValidPaths where path >= ? limit 1`

// QueryPathFromHashPart returns the valid path whose hash part is
// hashPart, or the zero Path if there is none. hashPart must be 32 nix32
// characters ("invalid hash part" otherwise, as Nix says).
func (d *DB) QueryPathFromHashPart(ctx context.Context, hashPart string) (storepath.Path, error) {
	if len(hashPart) != storepath.HashLen || !nix32.IsValid(hashPart) {
		return storepath.Path{}, fmt.Errorf("invalid hash part %q", hashPart)
	}
	prefix := string(d.dir) + "/" + hashPart
	var full string
	err := d.query(ctx, nil, qPathFromHashPart, func(r *sql.Row) error { return r.Scan(&full) }, prefix)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !strings.HasPrefix(full, prefix) {
		return storepath.Path{}, nil
	}
	if err != nil {
		return storepath.Path{}, fmt.Errorf("query path from hash part %s in %s: %w", hashPart, d.path, err)
	}
	return d.dir.Parse(full)
}

const qAllValid = `select path from ValidPaths`

// QueryAllValidPaths returns every valid path, sorted.
func (d *DB) QueryAllValidPaths(ctx context.Context) ([]storepath.Path, error) {
	ss, err := d.queryStrings(ctx, nil, qAllValid)
	if err != nil {
		return nil, fmt.Errorf("query valid paths in %s: %w", d.path, err)
	}
	return d.parsePaths(ss)
}

// splitSet splits a space-separated list into a sorted set, as Nix's
// tokenizeString<StringSet>.
func splitSet(s string) []string {
	f := strings.Fields(s)
	slices.Sort(f)
	return slices.Compact(f)
}
