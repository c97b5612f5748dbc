package nixdb

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/silo-cache/silo/internal/storepath"
)

// Node is a valid path in a Graph.
type Node struct {
	Path       storepath.Path
	Deriver    storepath.Path   // zero if unknown
	References []storepath.Path // without the path itself
	Referrers  []storepath.Path // without the path itself
	// Outputs are a derivation's statically known output paths
	// (DerivationOutputs rows), valid or not.
	Outputs []storepath.Path
	// Derivers are the valid derivations listing this path as an output.
	Derivers []storepath.Path
}

// Graph is a snapshot of the valid paths and the edges between them, what
// the garbage collector walks. Paths that become valid after it is taken
// are not in it; the collector must protect those by other means (temp
// roots, and checking referrers again when it invalidates).
type Graph struct {
	Nodes map[storepath.Path]*Node
}

const (
	qGraphPaths = `select id, path, deriver from ValidPaths`
	qGraphRefs  = `select referrer, reference from Refs where referrer != reference`
	qGraphOuts  = `select drv, path from DerivationOutputs`
)

// Graph reads the whole reference graph.
func (d *DB) Graph(ctx context.Context) (*Graph, error) {
	var g *Graph
	err := d.retry(ctx, func() error {
		var err error
		g, err = d.graph(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the reference graph of %s: %w", d.path, err)
	}
	return g, nil
}

func (d *DB) graph(ctx context.Context) (*Graph, error) {
	g := &Graph{Nodes: map[storepath.Path]*Node{}}
	byID := map[int64]*Node{}
	rows, err := d.db.QueryContext(ctx, qGraphPaths)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id int64
		var path string
		var deriver sql.NullString
		if err := rows.Scan(&id, &path, &deriver); err != nil {
			rows.Close()
			return nil, err
		}
		p, err := d.dir.Parse(path)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("valid path: %w", err)
		}
		n := &Node{Path: p}
		if deriver.Valid {
			n.Deriver, _ = d.dir.Parse(deriver.String)
		}
		g.Nodes[p] = n
		byID[id] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = d.db.QueryContext(ctx, qGraphRefs)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var from, to int64
		if err := rows.Scan(&from, &to); err != nil {
			rows.Close()
			return nil, err
		}
		a, b := byID[from], byID[to]
		if a == nil || b == nil { // registered after the paths were read
			continue
		}
		a.References = append(a.References, b.Path)
		b.Referrers = append(b.Referrers, a.Path)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = d.db.QueryContext(ctx, qGraphOuts)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var drv int64
		var path string
		if err := rows.Scan(&drv, &path); err != nil {
			return nil, err
		}
		n := byID[drv]
		p, err := d.dir.Parse(path)
		if n == nil || err != nil {
			continue
		}
		n.Outputs = append(n.Outputs, p)
		if out := g.Nodes[p]; out != nil {
			out.Derivers = append(out.Derivers, n.Path)
		}
	}
	return g, rows.Err()
}

// InvalidateUnreferenced invalidates, in one transaction and in order,
// those of paths that skip does not exclude and that no other valid path
// refers to at that point (earlier paths of the list no longer count). It
// returns the paths it invalidated; the others stay valid. Paths already
// invalid are returned as invalidated.
func (d *DB) InvalidateUnreferenced(ctx context.Context, paths []storepath.Path, skip func(storepath.Path) bool) ([]storepath.Path, error) {
	var done []storepath.Path
	err := d.tx(ctx, func(tx *sql.Tx) error {
		done = done[:0]
		for _, p := range paths {
			if skip != nil && skip(p) {
				continue
			}
			res, err := d.exec(ctx, tx, sInvalidateUnreferenced, p.String())
			if err != nil {
				return fmt.Errorf("invalidate %s in %s: %w", p, d.path, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				// In use, or not valid at all (then there is nothing to keep).
				if ok, err := d.isValid(ctx, tx, p); err != nil || ok {
					if err != nil {
						return err
					}
					continue
				}
			}
			done = append(done, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return done, nil
}

// sInvalidateUnreferenced deletes a path's row unless another path refers to it.
const sInvalidateUnreferenced = `delete from ValidPaths where path = ? and not exists
	(select 1 from Refs where Refs.reference = ValidPaths.id and Refs.referrer != ValidPaths.id)`
