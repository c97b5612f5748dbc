package nixdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// DrvOutput names an output of a content-addressed derivation by the
// derivation's hash modulo and the output name ("sha256:<hex>!out").
type DrvOutput struct {
	Hash   hash.Hash
	Output string
}

// String renders the id as Nix's DrvOutput::to_string: "<algo>:<base16>!<output>".
func (o DrvOutput) String() string { return o.strHash() + "!" + o.Output }

// strHash is the hash as the Realisations table stores it.
func (o DrvOutput) strHash() string { return o.Hash.Algo().String() + ":" + o.Hash.Base16() }

// ParseDrvOutput parses "<hash>!<output>" as Nix's DrvOutput::parse.
func ParseDrvOutput(s string) (DrvOutput, error) {
	h, out, ok := strings.Cut(s, "!")
	if !ok || out == "" {
		return DrvOutput{}, fmt.Errorf("invalid derivation output id %q (want <hash>!<output>)", s)
	}
	hh, err := hash.Parse(h)
	if err != nil {
		return DrvOutput{}, fmt.Errorf("invalid derivation output id %q: %w", s, err)
	}
	return DrvOutput{Hash: hh, Output: out}, nil
}

// Realisation says which store path a CA derivation's output built to.
type Realisation struct {
	ID      DrvOutput
	OutPath storepath.Path
	// Signatures are sorted and unique.
	Signatures []string
	// DependentRealisations are the realisations of the inputs this one
	// was built from.
	DependentRealisations map[DrvOutput]storepath.Path
}

// ErrNoCA is wrapped by realisation calls on a database without the CA
// tables (ca-derivations not enabled).
var ErrNoCA = errors.New("experimental Nix feature 'ca-derivations' is disabled; enable it in the daemon's nix.conf")

const (
	qRealisation     = `select Realisations.id, Output.path, Realisations.signatures from Realisations inner join ValidPaths as Output on Output.id = Realisations.outputPath where drvPath = ? and outputName = ?`
	qRealisationRefs = `select drvPath, outputName from Realisations join RealisationsRefs on realisationReference = Realisations.id where referrer = ?`
	sRegisterReal    = `insert into Realisations (drvPath, outputName, outputPath, signatures) values (?, ?, (select id from ValidPaths where path = ?), ?)`
	sUpdateReal      = `update Realisations set signatures = ? where drvPath = ? and outputName = ?`
	sAddRealRef      = `insert or replace into RealisationsRefs (referrer, realisationReference) values ((select id from Realisations where drvPath = ? and outputName = ?), (select id from Realisations where drvPath = ? and outputName = ?))`
)

// QueryRealisation returns the realisation of id, or nil if there is none.
func (d *DB) QueryRealisation(ctx context.Context, id DrvOutput) (*Realisation, error) {
	if !d.hasCA {
		return nil, ErrNoCA
	}
	var r *Realisation
	err := d.retry(ctx, func() error {
		var err error
		r, err = d.queryRealisation(ctx, nil, id, true)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("query realisation %s in %s: %w", id, d.path, err)
	}
	return r, nil
}

func (d *DB) queryRealisation(ctx context.Context, tx *sql.Tx, id DrvOutput, deps bool) (*Realisation, error) {
	var (
		rowID int64
		out   string
		sigs  sql.NullString
	)
	s, err := d.stmt(ctx, qRealisation)
	if err != nil {
		return nil, err
	}
	if tx != nil {
		s = tx.StmtContext(ctx, s)
	}
	err = s.QueryRowContext(ctx, id.strHash(), id.Output).Scan(&rowID, &out, &sigs)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r := &Realisation{ID: id, Signatures: splitSet(sigs.String), DependentRealisations: map[DrvOutput]storepath.Path{}}
	if r.OutPath, err = d.dir.Parse(out); err != nil {
		return nil, err
	}
	if !deps {
		return r, nil
	}
	s, err = d.stmt(ctx, qRealisationRefs)
	if err != nil {
		return nil, err
	}
	if tx != nil {
		s = tx.StmtContext(ctx, s)
	}
	rows, err := s.QueryContext(ctx, rowID)
	if err != nil {
		return nil, err
	}
	var depIDs []DrvOutput
	for rows.Next() {
		var h, name string
		if err := rows.Scan(&h, &name); err != nil {
			rows.Close()
			return nil, err
		}
		hh, err := hash.Parse(h)
		if err != nil {
			rows.Close()
			return nil, err
		}
		depIDs = append(depIDs, DrvOutput{Hash: hh, Output: name})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, dep := range depIDs {
		dr, err := d.queryRealisation(ctx, tx, dep, false)
		if err != nil {
			return nil, err
		}
		if dr != nil {
			r.DependentRealisations[dep] = dr.OutPath
		}
	}
	return r, nil
}

// RegisterRealisation records r, as Nix's registerDrvOutput: an existing
// compatible realisation gains r's signatures; an incompatible one is an
// error ("Trying to register a realisation of '%s', but we already have
// another one locally"); every dependent realisation must exist locally
// with the same output path. The output path must be valid.
func (d *DB) RegisterRealisation(ctx context.Context, r *Realisation) error {
	if !d.hasCA {
		return ErrNoCA
	}
	return d.tx(ctx, func(tx *sql.Tx) error {
		old, err := d.queryRealisation(ctx, tx, r.ID, true)
		if err != nil {
			return err
		}
		if old != nil {
			if !compatible(old, r) {
				return fmt.Errorf("Trying to register a realisation of '%s', but we already have another one locally.\nLocal:  %s\nRemote: %s",
					r.ID, old.OutPath, r.OutPath)
			}
			sigs := normSet(append(slices.Clone(old.Signatures), r.Signatures...))
			if _, err := d.exec(ctx, tx, sUpdateReal, nullStr(joinSet(sigs)), r.ID.strHash(), r.ID.Output); err != nil {
				return err
			}
		} else {
			ok, err := d.isValid(ctx, tx, r.OutPath)
			if err != nil {
				return err
			}
			if !ok {
				return notValid(r.OutPath.String())
			}
			if _, err := d.exec(ctx, tx, sRegisterReal, r.ID.strHash(), r.ID.Output, r.OutPath.String(), joinSet(normSet(r.Signatures))); err != nil {
				return err
			}
		}
		for dep, path := range r.DependentRealisations {
			local, err := d.queryRealisation(ctx, tx, dep, false)
			if err != nil {
				return err
			}
			if local == nil {
				return fmt.Errorf("unable to register the derivation '%s' as it depends on the non existent '%s'", r.ID, dep)
			}
			if local.OutPath != path {
				return fmt.Errorf("unable to register the derivation '%s' as it depends on a realisation of '%s' that doesn’t match what we have locally", r.ID, dep)
			}
			if _, err := d.exec(ctx, tx, sAddRealRef, r.ID.strHash(), r.ID.Output, dep.strHash(), dep.Output); err != nil {
				return err
			}
		}
		return nil
	})
}

// compatible is Nix's Realisation::isCompatibleWith (an older realisation
// without dependencies is compatible with one that has them).
func compatible(a, b *Realisation) bool {
	if a.OutPath != b.OutPath {
		return false
	}
	if (len(a.DependentRealisations) == 0) != (len(b.DependentRealisations) == 0) {
		return true
	}
	if len(a.DependentRealisations) != len(b.DependentRealisations) {
		return false
	}
	for k, v := range a.DependentRealisations {
		if b.DependentRealisations[k] != v {
			return false
		}
	}
	return true
}
