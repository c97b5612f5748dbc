package daemon

import (
	"context"
	"fmt"

	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/worker"
)

// opSetOptions applies the client's settings to this connection only
// (the fixed fields, then the overrides Nix lets this client change).
func opSetOptions(ctx context.Context, c *conn) error {
	var o nixconf.ClientOptions
	var obsolete uint64
	u := func(dst *uint64) func() error {
		return func() (err error) { *dst, err = c.dec.Uint32(); return }
	}
	b := func(dst *bool) func() error {
		return func() error {
			v, err := c.dec.Uint32()
			*dst = v != 0
			return err
		}
	}
	var verboseBuild uint64
	steps := []func() error{
		b(&o.KeepFailed), b(&o.KeepGoing), b(&o.TryFallback), u(&o.Verbosity), u(&o.MaxBuildJobs),
		u(&o.MaxSilentTime),
		u(&obsolete),                                 // useBuildHook
		u(&verboseBuild), u(&obsolete), u(&obsolete), // verboseBuild, logType, printBuildTrace
		u(&o.BuildCores), b(&o.UseSubstitutes),
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	o.VerboseBuild = verboseBuild == worker.LvlError
	if c.minor >= 12 {
		n, err := c.dec.Uint32()
		if err != nil {
			return err
		}
		if n > maxList {
			return fmt.Errorf("%w: %d settings", worker.ErrProtocol, n)
		}
		for range n {
			name, err := c.dec.String()
			if err != nil {
				return err
			}
			value, err := c.dec.String()
			if err != nil {
				return err
			}
			o.Overrides = append(o.Overrides, [2]string{name, value})
		}
	}
	if err := c.startWork(); err != nil {
		return err
	}
	c.settings.ApplyClient(&o, c.peer.Trusted, c.warn, c.debug)
	c.verbosity.Store(min(o.Verbosity, worker.LvlVomit))
	return c.stopWork()
}
