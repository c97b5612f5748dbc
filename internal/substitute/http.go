package substitute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/silo-cache/silo/internal/netrc"
	"github.com/silo-cache/silo/internal/nixconf"
)

// baseRetry is Nix's baseRetryTimeMs: the wait before the first retry,
// doubled for each next one (with up to 50% jitter on the exponent).
var baseRetry = 250 * time.Millisecond

// httpTransport reads an http(s) cache, as Nix's curl-based FileTransfer:
// netrc credentials sent up front, redirects followed, connect and stall
// deadlines, transient errors retried.
type httpTransport struct {
	pool    *Pool
	session *Session
	base    string // the cache URI, without a final slash

	mu         sync.Mutex
	netrcPath  string
	netrcFile  *netrc.File
	netrcStamp time.Time
}

func (h *httpTransport) describe(rel string) string {
	if strings.HasPrefix(rel, "http://") || strings.HasPrefix(rel, "https://") {
		return rel
	}
	return h.base + "/" + rel
}

// credentials returns the netrc entry for host from cfg's netrc file,
// re-read when the file changes.
func (h *httpTransport) credentials(cfg *Config, host string) (netrc.Entry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var mtime time.Time
	if st, err := statFile(cfg.NetrcFile); err == nil {
		mtime = st
	}
	if h.netrcFile == nil || h.netrcPath != cfg.NetrcFile || !mtime.Equal(h.netrcStamp) {
		f, err := netrc.Read(cfg.NetrcFile)
		if err != nil {
			h.session.log.Warn(err.Error())
			f = netrc.Parse("")
		}
		h.netrcFile, h.netrcPath, h.netrcStamp = f, cfg.NetrcFile, mtime
	}
	return h.netrcFile.Lookup(host)
}

// transferError is a failed request, classified as Nix's FileTransfer
// does.
type transferError struct {
	msg       string
	transient bool
	notFound  bool
}

func (e *transferError) Error() string { return e.msg }

func (e *transferError) Unwrap() error {
	if e.notFound {
		return errNotFound
	}
	return nil
}

// classify turns an HTTP status into Nix's error kinds.
func statusError(verb, u string, resp *http.Response) *transferError {
	code := resp.StatusCode
	e := &transferError{msg: fmt.Sprintf("unable to %s '%s': HTTP error %d ('%s')", verb, u, code, reasonPhrase(resp))}
	switch {
	case code == 404 || code == 410 || code == 401 || code == 403 || code == 407:
		e.notFound = true
	case code >= 400 && code < 500 && code != 408 && code != 429:
	case code == 501 || code == 505 || code == 511:
	default:
		e.transient = true
	}
	return e
}

func reasonPhrase(resp *http.Response) string {
	return strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
}

// curlText is curl's error text in a netError message, without the code.
func curlText(msg string) string {
	i := strings.LastIndex(msg, "': ")
	if i >= 0 {
		msg = msg[i+3:]
	}
	if j := strings.LastIndex(msg, " ("); j > 0 && strings.HasSuffix(msg, ")") {
		msg = msg[:j]
	}
	return msg
}

// netError describes a failed connection as curl would.
func netError(verb, u string, err error) *transferError {
	var ne net.Error
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		msg = "Couldn't connect to server (7)"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		msg = "Timeout was reached (28)"
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = "Transferred a partial file (18)"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		msg = "Couldn't resolve host name (6)"
	}
	return &transferError{msg: fmt.Sprintf("unable to %s '%s': %s", verb, u, msg), transient: true}
}

// retryWait is the wait before retry number attempt (1-based).
func retryWait(attempt int) time.Duration {
	return time.Duration(float64(baseRetry) * math.Pow(2, float64(attempt-1)+rand.Float64()*0.5))
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do sends one GET from offset; the response has a 2xx status. The
// request's context is cancelled by the returned stall watchdog when
// nothing arrives for the stall timeout.
func (h *httpTransport) do(ctx context.Context, u string, offset int64, cfg *Config) (*http.Response, *watchdog, error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") {
		return nil, nil, fmt.Errorf("refusing URL '%s' of binary cache '%s': only http(s) URLs are allowed", u, h.base)
	}
	wd := newWatchdog(ctx, cfg.stalledTimeout())
	req, err := http.NewRequestWithContext(wd.ctx, http.MethodGet, u, nil)
	if err != nil {
		wd.stop()
		return nil, nil, err
	}
	req.Header.Set("User-Agent", userAgent(cfg))
	if e, ok := h.credentials(cfg, pu.Hostname()); ok {
		req.SetBasicAuth(e.Login, e.Password)
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	client := &http.Client{Transport: h.pool.transport(cfg.connectTimeout()),
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("Number of redirects hit maximum amount (47)")
			}
			if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
				return fmt.Errorf("redirect to '%s' refused", r.URL)
			}
			return nil
		}}
	resp, err := client.Do(req)
	if err != nil {
		wd.stop()
		if wd.fired() {
			err = context.DeadlineExceeded
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, netError("download", u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		resp.Body.Close()
		wd.stop()
		return nil, nil, statusError("download", u, resp)
	}
	if offset > 0 && (resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", offset))) {
		resp.Body.Close()
		wd.stop()
		return nil, nil, fmt.Errorf("unable to download '%s': the server did not resume at offset %d", u, offset)
	}
	return resp, wd, nil
}

func userAgent(cfg *Config) string {
	ua := "silo Nix/" + nixconf.Version
	if cfg.UserAgentSuffix != "" {
		ua += " " + cfg.UserAgentSuffix
	}
	return ua
}

func (h *httpTransport) open(ctx context.Context, rel string, cfg *Config) (io.ReadCloser, int64, error) {
	u := h.describe(rel)
	for attempt := 1; ; attempt++ {
		resp, wd, err := h.do(ctx, u, 0, cfg)
		if err == nil {
			b := &httpBody{h: h, ctx: ctx, cfg: cfg, url: u, resp: resp, wd: wd, attempt: attempt}
			b.acceptRanges = resp.Header.Get("Accept-Ranges") == "bytes" && resp.Header.Get("Content-Encoding") == ""
			return b, resp.ContentLength, nil
		}
		var te *transferError
		if !errors.As(err, &te) || !te.transient || attempt >= cfg.attempts() {
			return nil, 0, err
		}
		d := retryWait(attempt)
		h.session.log.Warn(fmt.Sprintf("%s; retrying in %d ms", err, d.Milliseconds()))
		if err := sleep(ctx, d); err != nil {
			return nil, 0, err
		}
	}
}

func (h *httpTransport) getSmall(ctx context.Context, rel string, max int64, cfg *Config) ([]byte, error) {
	r, _, err := h.open(ctx, rel, cfg)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return readSmall(r, max, h.describe(rel))
}

// httpBody is a response body that resumes (with a Range request) after
// a transient failure in the middle, when the server accepts ranges.
type httpBody struct {
	h            *httpTransport
	ctx          context.Context
	cfg          *Config
	url          string
	resp         *http.Response
	wd           *watchdog
	off          int64
	attempt      int
	acceptRanges bool
	pending      error
}

func (b *httpBody) Read(p []byte) (int, error) {
	for {
		if b.resp == nil {
			return 0, b.pending
		}
		var n int
		err := b.pending
		b.pending = nil
		if err == nil {
			n, err = b.resp.Body.Read(p)
			b.off += int64(n)
			if n > 0 {
				b.wd.reset()
			}
		}
		if err == nil || err == io.EOF {
			return n, err
		}
		if n > 0 { // deliver the data; the error comes next
			b.pending = err
			return n, nil
		}
		if b.ctx.Err() != nil {
			return 0, b.ctx.Err()
		}
		if b.wd.fired() {
			err = context.DeadlineExceeded
		}
		te := netError("download", b.url, err)
		te.msg = fmt.Sprintf("unable to download '%s': HTTP error %d ('%s') (curl error: %s)", b.url, b.resp.StatusCode,
			reasonPhrase(b.resp), curlText(te.msg))
		b.resp.Body.Close()
		b.wd.stop()
		b.resp = nil
		if !b.acceptRanges || b.attempt >= b.cfg.attempts() {
			b.pending = te
			return 0, te
		}
		d := retryWait(b.attempt)
		b.h.session.log.Warn(fmt.Sprintf("%s; retrying from offset %d in %d ms", te, b.off, d.Milliseconds()))
		for {
			b.attempt++
			if err := sleep(b.ctx, d); err != nil {
				b.pending = err
				return 0, err
			}
			resp, wd, err := b.h.do(b.ctx, b.url, b.off, b.cfg)
			if err == nil {
				b.resp, b.wd = resp, wd
				break
			}
			var rte *transferError
			if !errors.As(err, &rte) || !rte.transient || b.attempt >= b.cfg.attempts() {
				b.pending = err
				return 0, err
			}
			d = retryWait(b.attempt)
			b.h.session.log.Warn(fmt.Sprintf("%s; retrying from offset %d in %d ms", err, b.off, d.Milliseconds()))
		}
	}
}

func (b *httpBody) Close() error {
	if b.pending == nil {
		b.pending = errors.New("read after close")
	}
	if b.resp == nil {
		return nil
	}
	err := b.resp.Body.Close()
	b.wd.stop()
	b.resp = nil
	return err
}

// watchdog cancels a request's context when nothing happened for d: the
// stalled-download-timeout, also while waiting for response headers.
type watchdog struct {
	ctx    context.Context
	cancel context.CancelFunc
	d      time.Duration
	t      *time.Timer
	mu     sync.Mutex
	fire   bool
}

func newWatchdog(parent context.Context, d time.Duration) *watchdog {
	w := &watchdog{d: d}
	w.ctx, w.cancel = context.WithCancel(parent)
	w.t = time.AfterFunc(d, func() {
		w.mu.Lock()
		w.fire = true
		w.mu.Unlock()
		w.cancel()
	})
	return w
}

func (w *watchdog) reset() { w.t.Reset(w.d) }

func (w *watchdog) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fire
}

func (w *watchdog) stop() {
	w.t.Stop()
	w.cancel()
}
