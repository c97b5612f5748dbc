package daemon

import (
	"context"
	"fmt"
	"strings"

	"github.com/silo-cache/silo/internal/derivation"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/substitute"
	"github.com/silo-cache/silo/internal/worker"
)

// Substitution (package substitute): the queries that answer from the
// binary caches, EnsurePath, QueryValidPaths' substitute flag and the
// substitution part of BuildPaths, BuildPathsWithResults and QueryMissing.

// substituter returns the connection's substitution session (made on
// first use), configured with the connection's current settings. Nix
// builds the substituter list and the trusted keys once per connection,
// at first use; the rest of the settings apply per operation.
func (c *conn) substituter() *substitute.Session {
	if c.subst == nil {
		c.subst = c.srv.substPool.NewSession(c.store, substLogger{c})
	}
	cfg := substitute.ConfigFromSettings(c.settings)
	cfg.RequireSigs = c.store.Options().RequireSigs
	if !c.subst.Started() {
		cfg.TrustedKeys = trustedKeys(c.settings, c.warn)
	}
	c.subst.Configure(cfg)
	return c.subst
}

// substLogger shows the session's messages and activities to the client.
type substLogger struct{ c *conn }

func (l substLogger) Log(level uint64, msg string) { l.c.logAt(level, msg) }
func (l substLogger) Warn(msg string)              { l.c.warn(msg) }
func (l substLogger) StartActivity(level, typ uint64, text string, fields []worker.Field, parent uint64) uint64 {
	return l.c.startActivity(level, typ, text, fields, parent)
}
func (l substLogger) StopActivity(id uint64) { l.c.log.StopActivity(id) }
func (l substLogger) Result(id, typ uint64, fields []worker.Field) {
	l.c.log.Result(id, typ, fields)
}

func opHasSubstitutes(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	have, err := c.substituter().QuerySubstitutablePaths(ctx, []storepath.Path{p})
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Bool(len(have) > 0)
	return nil
}

func opQuerySubstitutablePaths(ctx context.Context, c *conn) error {
	paths, err := c.readPaths()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	have, err := c.substituter().QuerySubstitutablePaths(ctx, paths)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.writePaths(have)
	return nil
}

func opQuerySubstitutablePathInfo(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	infos, err := c.substituter().QuerySubstitutablePathInfos(ctx, map[storepath.Path]string{p: ""})
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	info := infos[p]
	if info == nil {
		c.enc.Uint64(0)
		return nil
	}
	c.enc.Uint64(1)
	c.writeSubstitutableInfo(info)
	return nil
}

func (c *conn) writeSubstitutableInfo(info *substitute.SubstitutableInfo) {
	if info.Deriver.IsZero() {
		c.enc.String("")
	} else {
		c.enc.String(info.Deriver.String())
	}
	c.writePaths(info.References)
	c.enc.Uint64(info.DownloadSize)
	c.enc.Uint64(info.NarSize)
}

// opQuerySubstitutablePathInfos takes paths with their content addresses
// (protocol ≥ 1.22; before, paths only).
func opQuerySubstitutablePathInfos(ctx context.Context, c *conn) error {
	want := map[storepath.Path]string{}
	if c.minor < 22 {
		paths, err := c.readPaths()
		if err != nil {
			return err
		}
		for _, p := range paths {
			want[p] = ""
		}
	} else {
		n, err := c.dec.Uint64()
		if err != nil {
			return err
		}
		if n > maxList {
			return fmt.Errorf("%w: %d paths", worker.ErrProtocol, n)
		}
		for range n {
			p, err := c.readPath()
			if err != nil {
				return err
			}
			ca, err := c.dec.String()
			if err != nil {
				return err
			}
			if ca != "" {
				if _, err := narinfo.ParseCA(ca); err != nil {
					return err
				}
			}
			want[p] = ca
		}
	}
	if err := c.startWork(); err != nil {
		return err
	}
	infos, err := c.substituter().QuerySubstitutablePathInfos(ctx, want)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	paths := make([]storepath.Path, 0, len(infos))
	for p := range infos {
		paths = append(paths, p)
	}
	sortPaths(paths)
	c.enc.Uint64(uint64(len(paths)))
	for _, p := range paths {
		c.enc.String(p.String())
		c.writeSubstitutableInfo(infos[p])
	}
	return nil
}

// opEnsurePath makes sure a path is valid, substituting it (and its
// closure) if need be, as Nix's ensurePath.
func opEnsurePath(ctx context.Context, c *conn) error {
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
	if !ok {
		res, err := c.substituter().Realise(ctx, []substitute.Want{{Path: p}}, substitute.RealiseOptions{Progress: true})
		if err != nil {
			return err
		}
		if !res[0].Status.OK() {
			return fmt.Errorf("path '%s' does not exist and cannot be created", p)
		}
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(1)
	return nil
}

// substitutePaths is Nix's Store::substitutePaths, for QueryValidPaths
// with the substitute flag: the paths that are not derivations are
// substituted if a cache has them; a failure is only a warning.
func (c *conn) substitutePaths(ctx context.Context, paths []storepath.Path) {
	var wants []substitute.Want
	for _, p := range paths {
		if !p.IsDerivation() {
			wants = append(wants, substitute.Want{Path: p})
		}
	}
	if len(wants) == 0 {
		return
	}
	res, err := c.substituter().Realise(ctx, wants, substitute.RealiseOptions{Progress: true})
	if err != nil {
		c.warn(err.Error())
		return
	}
	var failed []string
	for _, r := range res {
		if !r.Status.OK() && (r.Status != substitute.NoSubstituters || r.Dependency) {
			failed = append(failed, "'"+r.Path.String()+"'")
		}
	}
	if len(failed) > 0 {
		c.warn(fmt.Sprintf("build of %s failed", strings.Join(failed, ", ")))
	}
}

// realiseOpaque is BuildPaths' goal for a path that is not a derivation
// output: substitute it unless it is valid (repair: even then).
func (c *conn) realiseOpaque(ctx context.Context, p storepath.Path, mode uint64, res *worker.BuildResult) (*worker.BuildResult, error) {
	r, err := c.substituter().Realise(ctx, []substitute.Want{{Path: p}}, substitute.RealiseOptions{Repair: mode == bmRepair, Progress: true})
	if err != nil {
		return nil, err
	}
	res.Status = r[0].BuildStatus()
	if r[0].Err != nil {
		res.ErrorMsg = r[0].Err.Error()
	}
	return res, nil
}

// substituteOutputs tries to substitute the missing wanted outputs of a
// valid derivation before it would be built (DerivationGoal's
// haveDerivation and outputsSubstitutionTried). Outputs whose paths are
// not known (content-addressed derivations) are left to the builder.
// With Fail, failMsg is the goal's error; err is an error of the
// operation.
func (c *conn) substituteOutputs(ctx context.Context, drvPath storepath.Path, d *derivation.Derivation, missing []string) (dec substitute.Decision, failMsg string, err error) {
	if !c.settings.Bool("substitute") {
		return substitute.Build, "", nil
	}
	attrs, err := derivation.NewAttrs(drvPath, d)
	if err != nil {
		return 0, "", err
	}
	if allowed, err := attrs.SubstitutesAllowed(); err != nil || !allowed {
		return substitute.Build, "", err
	}
	ca := derivationCA(d)
	outs, err := c.outputMap(ctx, drvPath)
	if err != nil {
		return 0, "", err
	}
	var wants []substitute.Want
	for _, name := range missing {
		p := outs[name]
		if p.IsZero() {
			return substitute.Build, "", nil // a realisation would be needed (issue 12)
		}
		wants = append(wants, substitute.Want{Path: p, CA: ca})
	}
	res, err := c.substituter().Realise(ctx, wants, substitute.RealiseOptions{Progress: true})
	if err != nil {
		return 0, "", err
	}
	dec, ferr := substitute.Decide(drvPath, res, c.settings.Bool("fallback"))
	if ferr != nil {
		failMsg = ferr.Error()
	}
	return dec, failMsg, nil
}

// derivationCA is Nix's getDerivationCA: the content address of a
// fixed-output derivation's "out", "" for other derivations.
func derivationCA(d *derivation.Derivation) string {
	o, ok := d.Outputs["out"]
	if !ok || o.Kind != derivation.CAFixed {
		return ""
	}
	return narinfo.CA{Recursive: o.Recursive, Hash: o.Hash}.String()
}
