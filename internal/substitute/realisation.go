package substitute

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/silo-cache/silo/internal/nixdb"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// maxRealisation bounds a realisations/<id>.doi file.
const maxRealisation = 1 << 20

// QueryRealisation asks the caches, in order, for the realisation of a
// content-addressed derivation's output (realisations/<id>.doi, Nix's
// queryRealisation; the hook for issue 12's DrvOutputSubstitutionGoal).
// It returns the first cache's answer and that cache, or nil if none has
// it. Signatures are returned, not checked: the caller registering it
// checks them as Nix's registerDrvOutput does. A cache error fails the
// query unless the client asked for --fallback.
func (s *Session) QueryRealisation(ctx context.Context, id nixdb.DrvOutput) (*nixdb.Realisation, *Cache, error) {
	cfg := s.config()
	for _, c := range s.Caches(ctx) {
		if err := c.checkEnabled(s); err != nil {
			continue
		}
		name := "realisations/" + id.String() + ".doi"
		data, err := c.t.getSmall(ctx, name, maxRealisation, &cfg)
		switch {
		case errors.Is(err, errNotFound):
			continue
		case err != nil:
			if cfg.TryFallback && ctx.Err() == nil {
				c.maybeDisable(s, &cfg)
				s.logError(err)
				continue
			}
			return nil, nil, err
		}
		r, err := parseRealisation(c, data, id)
		if err != nil {
			return nil, nil, fmt.Errorf("realisation '%s' of binary cache '%s': %w", id, c.URI, err)
		}
		return r, c, nil
	}
	return nil, nil, nil
}

// parseRealisation reads a .doi file: Nix's Realisation JSON, with paths
// as base names, read in the cache's store directory.
func parseRealisation(c *Cache, data []byte, id nixdb.DrvOutput) (*nixdb.Realisation, error) {
	w, err := worker.ParseRealisation(string(data))
	if err != nil {
		return nil, err
	}
	got, err := nixdb.ParseDrvOutput(w.ID)
	if err != nil {
		return nil, err
	}
	if got != id {
		return nil, fmt.Errorf("it is the realisation of '%s'", w.ID)
	}
	r := &nixdb.Realisation{ID: got, Signatures: slices.Clone(w.Signatures), DependentRealisations: map[nixdb.DrvOutput]storepath.Path{}}
	if r.OutPath, err = c.StoreDir.ParseBase(w.OutPath); err != nil {
		return nil, err
	}
	for k, v := range w.DependentRealisations {
		dk, err := nixdb.ParseDrvOutput(k)
		if err != nil {
			return nil, err
		}
		dv, err := c.StoreDir.ParseBase(v)
		if err != nil {
			return nil, err
		}
		r.DependentRealisations[dk] = dv
	}
	slices.Sort(r.Signatures)
	r.Signatures = slices.Compact(r.Signatures)
	return r, nil
}
