package daemon

import (
	"context"
	"fmt"
	"slices"

	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

func opQueryDerivationOutputMap(ctx context.Context, c *conn) error {
	drv, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	outs, err := c.outputMap(ctx, drv)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	names := make([]string, 0, len(outs))
	for n := range outs {
		names = append(names, n)
	}
	slices.Sort(names)
	c.enc.Uint64(uint64(len(names)))
	for _, n := range names {
		c.enc.String(n)
		if p := outs[n]; p.IsZero() {
			c.enc.String("")
		} else {
			c.enc.String(p.String())
		}
	}
	return nil
}

func opQueryDerivationOutputNames(ctx context.Context, c *conn) error {
	drv, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	d, err := c.readDerivation(ctx, drv)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Strings(d.OutputNames())
	return nil
}

// readDerivedPaths reads the paths of BuildPaths, QueryMissing and
// BuildPathsWithResults: DerivedPath strings (protocol ≥ 1.30) or paths
// with outputs ("drv!out"), which read the same.
func (c *conn) readDerivedPaths() ([]worker.DerivedPath, error) {
	ss, err := c.dec.Strings()
	if err != nil {
		return nil, err
	}
	dps := make([]worker.DerivedPath, len(ss))
	for i, s := range ss {
		dps[i] = worker.ParseDerivedPath(s)
		p, err := c.parsePath(dps[i].Path)
		if err != nil {
			return nil, err
		}
		if dps[i].Built && !p.IsDerivation() {
			return nil, fmt.Errorf("path '%s' is not a derivation", p)
		}
	}
	return dps, nil
}

// missingOutputs returns the wanted outputs (all if wanted is empty) of the
// valid derivation drv whose paths are unknown or not valid.
func (c *conn) missingOutputs(ctx context.Context, drv storepath.Path, wanted []string) ([]string, error) {
	outs, err := c.outputMap(ctx, drv)
	if err != nil {
		return nil, err
	}
	if len(wanted) == 0 {
		d, err := c.readDerivation(ctx, drv)
		if err != nil {
			return nil, err
		}
		wanted = d.OutputNames()
	}
	var missing []string
	for _, name := range wanted {
		p, known := outs[name]
		if !known || p.IsZero() {
			missing = append(missing, name)
			continue
		}
		ok, err := c.store.IsValid(ctx, p)
		if err != nil {
			return nil, err
		}
		if !ok {
			missing = append(missing, name)
		}
	}
	return missing, nil
}
