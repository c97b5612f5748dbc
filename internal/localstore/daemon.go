package localstore

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// maxIdle bounds the daemon connections kept open between queries.
const maxIdle = 8

// Daemon asks nix-daemon over its socket. It is safe for concurrent use: it
// keeps a small pool of connections and replaces any that break.
type Daemon struct {
	socket string
	dir    storepath.Dir

	mu     sync.Mutex
	idle   []*worker.Client
	closed bool
}

// DialDaemon connects to nix-daemon at socket (DefaultSocket if empty),
// serving the store in dir.
func DialDaemon(ctx context.Context, socket string, dir storepath.Dir) (*Daemon, error) {
	if socket == "" {
		socket = DefaultSocket
	}
	d := &Daemon{socket: socket, dir: dir}
	c, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	d.put(c)
	return d, nil
}

func (d *Daemon) get(ctx context.Context) (*worker.Client, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("nix-daemon connection closed")
	}
	if n := len(d.idle); n > 0 {
		c := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	return worker.Dial(ctx, d.socket, nil)
}

func (d *Daemon) put(c *worker.Client) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.Broken() || d.closed || len(d.idle) >= maxIdle {
		c.Close()
		return
	}
	d.idle = append(d.idle, c)
}

// QueryPathInfo implements Store.
func (d *Daemon) QueryPathInfo(ctx context.Context, p storepath.Path) (*PathInfo, error) {
	if p.Dir() != d.dir {
		return nil, fmt.Errorf("query %s: %w (not in store directory %s)", p, ErrNotFound, d.dir)
	}
	c, err := d.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", p, err)
	}
	wi, err := c.QueryPathInfo(ctx, p.String())
	d.put(c)
	if errors.Is(err, worker.ErrNotValid) {
		return nil, fmt.Errorf("query %s: %w", p, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return pathInfo(d.dir, p, wi.NarHash, wi.Deriver, wi.References, wi.Sigs,
		wi.NarSize, int64(wi.RegistrationTime), wi.Ultimate, wi.CA)
}

// QueryPathFromHashPart implements Store.
func (d *Daemon) QueryPathFromHashPart(ctx context.Context, hashPart string) (storepath.Path, error) {
	if len(hashPart) != storepath.HashLen || !nix32.IsValid(hashPart) {
		return storepath.Path{}, fmt.Errorf("query path from hash part %q: not %d nix32 characters", hashPart, storepath.HashLen)
	}
	c, err := d.get(ctx)
	if err != nil {
		return storepath.Path{}, fmt.Errorf("query path from hash part %s: %w", hashPart, err)
	}
	full, err := c.QueryPathFromHashPart(ctx, hashPart)
	d.put(c)
	if err != nil {
		return storepath.Path{}, err
	}
	if full == "" {
		return storepath.Path{}, fmt.Errorf("query path from hash part %s: %w", hashPart, ErrNotFound)
	}
	return d.dir.Parse(full)
}

// Close implements Store.
func (d *Daemon) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, c := range d.idle {
		c.Close()
	}
	d.idle = nil
	return nil
}
