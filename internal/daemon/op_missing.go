package daemon

import (
	"context"

	"github.com/silo-cache/silo/internal/derivation"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// opQueryMissing is Nix's queryMissing: what is valid needs nothing; a
// missing path that a cache has will be substituted (and, recursively,
// its references); a derivation whose missing wanted outputs all have
// substitutes needs only those, else it will be built (and, recursively,
// its inputs); a missing path no cache has and no derivation makes is
// unknown. The caches are asked a level of the graph at a time, each
// level in parallel.
func opQueryMissing(ctx context.Context, c *conn) error {
	targets, err := c.readDerivedPaths()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	m, err := c.queryMissing(ctx, targets)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	for _, set := range []map[storepath.Path]bool{m.willBuild, m.willSubstitute, m.unknown} {
		paths := make([]storepath.Path, 0, len(set))
		for p := range set {
			paths = append(paths, p)
		}
		sortPaths(paths)
		c.writePaths(paths)
	}
	c.enc.Uint64(m.downloadSize)
	c.enc.Uint64(m.narSize)
	return nil
}

type missing struct {
	willBuild, willSubstitute, unknown map[storepath.Path]bool
	downloadSize, narSize              uint64
}

// outputCheck is a derivation whose invalid wanted outputs may all be
// substitutable.
type outputCheck struct {
	drv     storepath.Path
	d       *derivation.Derivation
	invalid []storepath.Path
}

func (c *conn) queryMissing(ctx context.Context, targets []worker.DerivedPath) (*missing, error) {
	m := &missing{willBuild: map[storepath.Path]bool{}, willSubstitute: map[storepath.Path]bool{}, unknown: map[storepath.Path]bool{}}
	done := map[string]bool{}
	useSubs := c.settings.Bool("substitute")
	queue := targets
	for len(queue) > 0 {
		var next []worker.DerivedPath
		var opaque []storepath.Path
		var checks []outputCheck
		mustBuild := func(drv storepath.Path, d *derivation.Derivation) {
			m.willBuild[drv] = true
			for in, outs := range d.InputDrvs {
				next = append(next, worker.DerivedPath{Path: in.String(), Built: true, Outputs: outs})
			}
		}
		for _, dp := range queue {
			if done[dp.String()] {
				continue
			}
			done[dp.String()] = true
			p, err := c.parsePath(dp.Path)
			if err != nil {
				return nil, err
			}
			ok, err := c.store.IsValid(ctx, p)
			if err != nil {
				return nil, err
			}
			if !dp.Built {
				if !ok {
					opaque = append(opaque, p)
				}
				continue
			}
			if !ok {
				m.unknown[p] = true
				continue
			}
			chk, known, err := c.invalidOutputs(ctx, p, dp.Outputs)
			if err != nil {
				return nil, err
			}
			if known && len(chk.invalid) == 0 {
				continue
			}
			allowed := false
			if known && useSubs {
				attrs, err := derivation.NewAttrs(p, chk.d)
				if err != nil {
					return nil, err
				}
				if allowed, err = attrs.SubstitutesAllowed(); err != nil {
					return nil, err
				}
			}
			if allowed {
				checks = append(checks, chk)
			} else {
				mustBuild(p, chk.d)
			}
		}
		if len(opaque) == 0 && len(checks) == 0 {
			queue = next
			continue
		}
		ask := map[storepath.Path]string{}
		for _, p := range opaque {
			ask[p] = ""
		}
		for _, chk := range checks {
			for _, o := range chk.invalid {
				if _, dup := ask[o]; !dup || ask[o] == "" {
					ask[o] = derivationCA(chk.d)
				}
			}
		}
		infos, err := c.substituter().QuerySubstitutablePathInfos(ctx, ask)
		if err != nil {
			return nil, err
		}
		for _, p := range opaque {
			info := infos[p]
			if info == nil {
				m.unknown[p] = true
				continue
			}
			if !m.willSubstitute[p] {
				m.willSubstitute[p] = true
				m.downloadSize += info.DownloadSize
				m.narSize += info.NarSize
			}
			for _, r := range info.References {
				next = append(next, worker.DerivedPath{Path: r.String()})
			}
		}
		for _, chk := range checks {
			all := true
			for _, o := range chk.invalid {
				if infos[o] == nil {
					all = false
				}
			}
			if !all {
				mustBuild(chk.drv, chk.d)
				continue
			}
			for _, o := range chk.invalid {
				next = append(next, worker.DerivedPath{Path: o.String()})
			}
		}
		queue = next
	}
	return m, nil
}

// invalidOutputs reads a valid derivation and returns its wanted outputs
// (all if wanted is empty) that are not valid; known is false if some
// output's path is not known (Nix's knownOutputPaths).
func (c *conn) invalidOutputs(ctx context.Context, drv storepath.Path, wanted []string) (chk outputCheck, known bool, err error) {
	chk.drv = drv
	if chk.d, err = c.readDerivation(ctx, drv); err != nil {
		return chk, false, err
	}
	outs, err := c.outputMap(ctx, drv)
	if err != nil {
		return chk, false, err
	}
	want := map[string]bool{}
	for _, w := range wanted {
		want[w] = true
	}
	known = true
	for _, name := range chk.d.OutputNames() {
		p, ok := outs[name]
		if !ok || p.IsZero() {
			known = false
			break
		}
		if len(wanted) > 0 && !want[name] {
			continue
		}
		valid, err := c.store.IsValid(ctx, p)
		if err != nil {
			return chk, false, err
		}
		if !valid {
			chk.invalid = append(chk.invalid, p)
		}
	}
	return chk, known, nil
}
