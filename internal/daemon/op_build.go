package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/silo-cache/silo/internal/derivation"
	"github.com/silo-cache/silo/internal/nixdb"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/substitute"
	"github.com/silo-cache/silo/internal/worker"
)

// Build modes.
const (
	bmNormal = 0
	bmRepair = 1
	bmCheck  = 2
)

// errNoBuilder explains why a derivation cannot be realised: no cache
// has its outputs, and silo's daemon does not build yet.
func errNoBuilder(drv storepath.Path, missing []string) string {
	return fmt.Sprintf("cannot build '%s' (outputs %s): no substituter has them and silo daemon does not build derivations yet; "+
		"build it with nix-daemon or a local store (--store local), or copy its outputs in with nix copy",
		drv, strings.Join(missing, ", "))
}

// realise answers for one requested path what the builder would: already
// valid, substituted, or a failure saying what is missing.
func (c *conn) realise(ctx context.Context, dp worker.DerivedPath, mode uint64) (*worker.BuildResult, error) {
	res := &worker.BuildResult{Path: dp, BuiltOutputs: map[string]worker.Realisation{}}
	p, err := c.parsePath(dp.Path)
	if err != nil {
		return nil, err
	}
	ok, err := c.store.IsValid(ctx, p)
	if err != nil {
		return nil, err
	}
	if !dp.Built {
		return c.realiseOpaque(ctx, p, mode, res) // op_subst.go
	}
	if !ok {
		res.Status, res.ErrorMsg = worker.MiscFailure, fmt.Sprintf("cannot build missing derivation '%s'", p)
		return res, nil
	}
	d, err := c.readDerivation(ctx, p)
	if err != nil {
		return nil, err
	}
	wanted := dp.Outputs
	if len(wanted) == 0 {
		wanted = d.OutputNames()
	}
	for _, w := range wanted {
		if _, ok := d.Outputs[w]; !ok {
			return nil, fmt.Errorf("derivation '%s' does not have wanted outputs '%s'", p, w)
		}
	}
	missing, err := c.missingOutputs(ctx, p, wanted)
	if err != nil {
		return nil, err
	}
	res.Status = worker.AlreadyValid
	if len(missing) > 0 && mode == bmNormal {
		dec, failMsg, err := c.substituteOutputs(ctx, p, d, missing) // op_subst.go
		switch {
		case err != nil:
			return nil, err
		case dec == substitute.Fail:
			res.Status, res.ErrorMsg = worker.TransientFailure, "\x1b[0m"+failMsg
			return res, nil
		case dec == substitute.Done:
			res.Status, missing = worker.Substituted, nil
		}
	}
	if len(missing) > 0 || mode != bmNormal {
		if len(missing) == 0 {
			missing = wanted
		}
		res.Status, res.ErrorMsg = worker.MiscFailure, errNoBuilder(p, missing)
		return res, nil
	}
	hashes, err := c.hasher().StaticOutputHashes(ctx, d)
	if err != nil {
		return nil, err
	}
	outs, err := c.outputMap(ctx, p)
	if err != nil {
		return nil, err
	}
	for _, w := range wanted {
		id := nixdb.DrvOutput{Hash: hashes[w], Output: w}
		res.BuiltOutputs[id.String()] = worker.Realisation{ID: id.String(), OutPath: outs[w].Base(), DependentRealisations: map[string]string{}}
	}
	return res, nil
}

func (c *conn) readBuildMode() (uint64, error) {
	mode, err := c.dec.Uint32()
	if err != nil {
		return 0, err
	}
	if mode > bmCheck {
		return 0, fmt.Errorf("invalid build mode %d", mode)
	}
	if mode == bmRepair && !c.peer.Trusted {
		return 0, errors.New("repairing is not allowed because you are not in 'trusted-users'")
	}
	return mode, nil
}

// opBuildPaths realises paths; a failure is an error (one failure: its
// own message; several: "build of ... failed", as Nix's Worker).
func opBuildPaths(ctx context.Context, c *conn) error {
	dps, err := c.readDerivedPaths()
	if err != nil {
		return err
	}
	mode := uint64(bmNormal)
	if c.minor >= 15 {
		if mode, err = c.readBuildMode(); err != nil {
			return err
		}
	}
	if err := c.startWork(); err != nil {
		return err
	}
	var failed []*worker.BuildResult
	for _, dp := range dps {
		res, err := c.realise(ctx, dp, mode)
		if err != nil {
			return err
		}
		if res.Status != worker.AlreadyValid && res.Status != worker.Substituted {
			failed = append(failed, res)
		}
	}
	// As Nix's buildPaths: a derivation goal carries its error, a
	// substitution goal none (its reason was only logged).
	var exs []string
	var names []storepath.Path
	for _, f := range failed {
		if f.Path.Built {
			exs = append(exs, f.ErrorMsg)
		}
		p, _ := c.parsePath(f.Path.Path)
		names = append(names, p)
	}
	switch {
	case len(failed) == 1 && len(exs) == 1:
		return errors.New(exs[0])
	case len(failed) > 0:
		for _, ex := range exs {
			c.logAt(worker.LvlError, "\x1b[31;1merror:\x1b[0m "+ex)
		}
		sortPaths(names)
		quoted := make([]string, len(names))
		for i, p := range names {
			quoted[i] = "'" + p.String() + "'"
		}
		return fmt.Errorf("build of %s failed", strings.Join(quoted, ", "))
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(1)
	return nil
}

// opBuildPathsWithResults realises paths and answers one result each;
// failures are results, not errors.
func opBuildPathsWithResults(ctx context.Context, c *conn) error {
	dps, err := c.readDerivedPaths()
	if err != nil {
		return err
	}
	mode, err := c.readBuildMode()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	results := make([]*worker.BuildResult, len(dps))
	for i, dp := range dps {
		if results[i], err = c.realise(ctx, dp, mode); err != nil {
			return err
		}
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(uint64(len(results)))
	for _, r := range results {
		if err := c.enc.WriteBuildResult(r); err != nil {
			return err
		}
	}
	return nil
}

// opBuildDerivation builds a derivation sent in full (the build hook, over
// ssh-ng). Only already valid outputs succeed until silo builds.
func opBuildDerivation(ctx context.Context, c *conn) error {
	drvPath, err := c.readPath()
	if err != nil {
		return err
	}
	d, err := derivation.ReadBasic(c.dec, drvPath, c.features())
	if err != nil {
		return err
	}
	mode, err := c.dec.Uint32()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	typ, err := d.Type()
	if err != nil {
		return err
	}
	if !c.peer.Trusted && typ == derivation.TypeInputAddressed {
		return errors.New("you are not privileged to build input-addressed derivations")
	}
	res := worker.BuildResult{Status: worker.AlreadyValid, BuiltOutputs: map[string]worker.Realisation{}}
	var missing []string
	for _, name := range d.OutputNames() {
		p, known, err := d.OutputPath(name)
		if err != nil {
			return err
		}
		ok := false
		if known {
			if ok, err = c.store.IsValid(ctx, p); err != nil {
				return err
			}
		}
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 || mode != bmNormal {
		if len(missing) == 0 {
			missing = d.OutputNames()
		}
		res.Status, res.ErrorMsg = worker.MiscFailure, errNoBuilder(drvPath, missing)
	} else {
		hashes, err := c.hasher().StaticOutputHashes(ctx, d)
		if err != nil {
			return err
		}
		for _, name := range d.OutputNames() {
			p, _, _ := d.OutputPath(name)
			id := nixdb.DrvOutput{Hash: hashes[name], Output: name}
			res.BuiltOutputs[id.String()] = worker.Realisation{ID: id.String(), OutPath: p.Base(), DependentRealisations: map[string]string{}}
		}
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(uint64(res.Status))
	c.enc.String(res.ErrorMsg)
	if c.minor >= 29 {
		c.enc.Uint64(res.TimesBuilt)
		c.enc.Bool(res.IsNonDeterministic)
		c.enc.Uint64(res.StartTime)
		c.enc.Uint64(res.StopTime)
	}
	if c.minor >= 28 {
		return c.enc.WriteRealisations(res.BuiltOutputs)
	}
	return nil
}
