package listen

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits bound what clients may hold of a server. Zero fields mean the
// documented defaults.
type Limits struct {
	// MaxConns bounds open connections; more are answered 503 and closed.
	// 0 means DefaultMaxConns(), derived from the open-file limit.
	MaxConns int
	// MaxConnsPerAddr bounds the open connections of one client address
	// (an IPv4 address, or an IPv6 /64); 0 means DefaultMaxConnsPerAddr,
	// < 0 no limit (behind a reverse proxy, whose address every
	// connection has). Unix sockets are not counted per address.
	MaxConnsPerAddr int
	// Rate is what every transfer on a connection must keep up.
	Rate Rate
}

// DefaultMaxConnsPerAddr is Limits.MaxConnsPerAddr's default: ten Nix
// clients at their default of 25 parallel transfers.
const DefaultMaxConnsPerAddr = 256

// DefaultMaxConns returns Limits.MaxConns's default: half of the
// open-file limit less a reserve for the database and blobs (each
// connection may hold a blob open too), at most 16384.
func DefaultMaxConns() int {
	var rl syscall.Rlimit
	n := uint64(1024)
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		n = rl.Cur
	}
	if n < 256 {
		return 32
	}
	return int(min((n-128)/2, 16384))
}

// RaiseFileLimit raises the soft limit on open files to the hard limit
// (Go does so at start-up too; this makes it explicit and reports it) and
// returns the limit in effect.
func RaiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return rl.Cur, fmt.Errorf("raise the open-file limit to %d: %w", rl.Max, err)
		}
	}
	return rl.Cur, nil
}

// Guard is a listener that bounds connections (overall and per client
// address), answers those past the bounds with a plain 503, and hands out
// connections (*Conn) that hold every transfer to a minimum rate.
type Guard struct {
	net.Listener
	lim  Limits
	rate Rate
	log  *slog.Logger

	mu      sync.Mutex
	open    int
	perAddr map[string]int

	rejecting chan struct{} // bounds the goroutines answering 503
	rejected  atomic.Int64
}

// NewGuard wraps l. log (nil: slog.Default()) is told, at most once a
// minute, that connections are being refused.
func NewGuard(l net.Listener, lim Limits, log *slog.Logger) *Guard {
	if lim.MaxConns <= 0 {
		lim.MaxConns = DefaultMaxConns()
	}
	if lim.MaxConnsPerAddr == 0 {
		lim.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if log == nil {
		log = slog.Default()
	}
	return &Guard{Listener: l, lim: lim, rate: lim.Rate.withDefaults(), log: log,
		perAddr: map[string]int{}, rejecting: make(chan struct{}, 64)}
}

// Limits returns the limits in effect, defaults filled in.
func (g *Guard) Limits() Limits { l := g.lim; l.Rate = g.rate; return l }

// Rejected returns how many connections were refused so far.
func (g *Guard) Rejected() int64 { return g.rejected.Load() }

// Open returns how many connections are open.
func (g *Guard) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// Accept returns the next connection within the limits.
func (g *Guard) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addrKey(c.RemoteAddr())
		if reason := g.admit(key); reason != "" {
			g.reject(c, reason)
			continue
		}
		return newConn(c, g, key), nil
	}
}

// admit counts a new connection from key, or says why it is refused.
func (g *Guard) admit(key string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open >= g.lim.MaxConns {
		return fmt.Sprintf("the server has %d connections open, its limit", g.open)
	}
	if key != "" && g.lim.MaxConnsPerAddr > 0 && g.perAddr[key] >= g.lim.MaxConnsPerAddr {
		return fmt.Sprintf("%s has %d connections open, the limit per client address", key, g.perAddr[key])
	}
	g.open++
	if key != "" {
		g.perAddr[key]++
	}
	return ""
}

func (g *Guard) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open--
	if key != "" {
		if g.perAddr[key]--; g.perAddr[key] <= 0 {
			delete(g.perAddr, key)
		}
	}
}

var lastRejectLog atomic.Int64

// reject answers c with 503 and closes it, in the background; when too
// many are being answered already, it just closes it.
func (g *Guard) reject(c net.Conn, reason string) {
	n := g.rejected.Add(1)
	if now := time.Now().Unix(); lastRejectLog.Load() < now-60 {
		lastRejectLog.Store(now)
		g.log.Warn("refusing connections (503)", "reason", reason, "remote", c.RemoteAddr().String(), "refused_so_far", n)
	}
	select {
	case g.rejecting <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-g.rejecting }()
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, busyResponse); err != nil {
			return
		}
		// Read what the client sent before closing, so that the kernel
		// does not reset the connection and lose the answer.
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

const busyBody = "the server has too many connections open (from your address, or overall); retry later\n"

var busyResponse = "HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 5\r\n" +
	"Connection: close\r\n" +
	fmt.Sprintf("Content-Length: %d\r\n\r\n", len(busyBody)) + busyBody

// addrKey is what connections are counted by: the IPv4 address, or the
// IPv6 /64 (one host usually has a whole /64); "" for unix sockets.
func addrKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		if host, _, err := net.SplitHostPort(a.String()); err == nil && !strings.HasPrefix(a.Network(), "unix") {
			return host
		}
		return ""
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return (&net.IPNet{IP: ta.IP.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}
