package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/silo-cache/silo/internal/derivation"
	"github.com/silo-cache/silo/internal/nixdb"
	"github.com/silo-cache/silo/internal/storepath"
)

// drvReader reads derivations from the store directory (whether or not
// they are valid, as Nix's readInvalidDerivation) for one connection.
type drvReader struct {
	real func(storepath.Path) string
	xp   derivation.Features
}

func (r *drvReader) ReadDerivation(ctx context.Context, p storepath.Path) (*derivation.Derivation, error) {
	data, err := os.ReadFile(r.real(p))
	if err != nil {
		return nil, fmt.Errorf("reading derivation '%s': %w", p, err)
	}
	return derivation.Read(p, data, r.xp)
}

func (c *conn) features() derivation.Features {
	return derivation.Features{CADerivations: c.settings.Feature("ca-derivations"), ImpureDerivations: c.settings.Feature("impure-derivations")}
}

// hasher returns the connection's hashDerivationModulo memo.
func (c *conn) hasher() *derivation.Hasher {
	if c.drvHasher == nil {
		c.drvHasher = derivation.NewHasher(&drvReader{real: c.realPath, xp: c.features()})
	}
	return c.drvHasher
}

func (c *conn) realPath(p storepath.Path) string {
	return c.srv.opts.Store.RealStoreDir + "/" + p.Base()
}

// readDerivation reads a derivation from the store.
func (c *conn) readDerivation(ctx context.Context, p storepath.Path) (*derivation.Derivation, error) {
	return (&drvReader{real: c.realPath, xp: c.features()}).ReadDerivation(ctx, p)
}

// derivationOutputs is the store's check of a .drv as it is registered
// (Nix's checkDerivationOutputs) and its statically known outputs, for
// the DerivationOutputs table.
func (c *conn) derivationOutputs(ctx context.Context, drv storepath.Path, file string) (map[string]storepath.Path, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading derivation '%s': %w", drv, err)
	}
	d, err := derivation.Read(drv, data, c.features())
	if err != nil {
		return nil, err
	}
	if err := derivation.CheckDerivationOutputs(ctx, c.hasher(), drv, d); err != nil {
		return nil, err
	}
	outs := map[string]storepath.Path{}
	for _, name := range d.OutputNames() {
		p, known, err := d.OutputPath(name)
		if err != nil {
			return nil, err
		}
		if known {
			outs[name] = p
		}
	}
	return outs, nil
}

// outputMap is Nix's queryPartialDerivationOutputMap: the derivation's
// outputs with their paths where known (from DerivationOutputs, and with
// ca-derivations from realisations); a zero Path means unknown. The
// derivation must be valid.
func (c *conn) outputMap(ctx context.Context, drv storepath.Path) (map[string]storepath.Path, error) {
	outs, err := c.store.QueryDerivationOutputs(ctx, drv)
	if err != nil {
		return nil, err
	}
	if !c.settings.Feature("ca-derivations") {
		return outs, nil
	}
	d, err := c.readDerivation(ctx, drv)
	if err != nil {
		return nil, err
	}
	hashes, err := c.hasher().StaticOutputHashes(ctx, d)
	if err != nil {
		return nil, err
	}
	for name, h := range hashes {
		r, err := c.store.QueryRealisation(ctx, nixdb.DrvOutput{Hash: h, Output: name})
		if err != nil && !errors.Is(err, nixdb.ErrNoCA) {
			return nil, err
		}
		if r != nil {
			outs[name] = r.OutPath
		} else if _, ok := outs[name]; !ok {
			outs[name] = storepath.Path{}
		}
	}
	return outs, nil
}
