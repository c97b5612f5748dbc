package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// The control API, HTTP over the queue's unix socket.
const (
	pathEnqueue = "/v1/enqueue" // POST enqueueRequest → 204 once durable
	pathStatus  = "/v1/status"  // GET → Status
	pathRetry   = "/v1/retry"   // POST → {"requeued": N}
)

type enqueueRequest struct {
	Paths []string `json:"paths"`
	Drv   string   `json:"drv,omitempty"`
}

// Handler returns the control API.
func (q *Queue) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathEnqueue, func(w http.ResponseWriter, r *http.Request) {
		var req enqueueRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := q.Enqueue(r.Context(), req.Paths, req.Drv); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET "+pathStatus, func(w http.ResponseWriter, r *http.Request) {
		s, err := q.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("POST "+pathRetry, func(w http.ResponseWriter, r *http.Request) {
		n, err := q.Retry(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int64{"requeued": n})
	})
	return mux
}

// Serve runs the queue and its control API on l until ctx is done.
func (q *Queue) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: q.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	runErr := q.Run(ctx)
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutCtx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("queue control socket: %w", err)
	}
	return runErr
}

// Client talks to a running queue over its socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the queue at socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}}
}

func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://queue"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("queue at %s: %w (is silo queue running with --socket %s?)", c.socket, unwrapURLError(err), c.socket)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("queue at %s: %s: %s", c.socket, resp.Status, bytes.TrimSpace(msg))
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("queue at %s: bad answer: %w", c.socket, err)
		}
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// Enqueue hands paths to the queue; nil means they are durably queued.
func (c *Client) Enqueue(ctx context.Context, paths []string, drv string) error {
	return c.call(ctx, http.MethodPost, pathEnqueue, enqueueRequest{Paths: paths, Drv: drv}, nil)
}

// Status returns the queue's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.call(ctx, http.MethodGet, pathStatus, nil, &s)
	return s, err
}

// Retry requeues failed paths.
func (c *Client) Retry(ctx context.Context) (int64, error) {
	var out map[string]int64
	err := c.call(ctx, http.MethodPost, pathRetry, nil, &out)
	return out["requeued"], err
}

// DefaultSocket is where silo queue listens and silo hook connects unless
// told otherwise: /var/lib/silo/queue.sock for root (Nix runs the
// post-build-hook as root in a multi-user install), else
// $XDG_STATE_HOME/silo/queue.sock or ~/.local/state/silo/queue.sock. Not
// under /run: the spool beside the socket must survive a reboot.
func DefaultSocket(getenv func(string) string) string {
	if os.Geteuid() == 0 {
		return "/var/lib/silo/queue.sock"
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "silo", "queue.sock")
	}
	return filepath.Join(getenv("HOME"), ".local", "state", "silo", "queue.sock")
}

// DefaultStateDir is where silo queue keeps its database: /var/lib/silo/queue
// for root, else $XDG_STATE_HOME/silo/queue or ~/.local/state/silo/queue.
func DefaultStateDir(getenv func(string) string) string {
	if os.Geteuid() == 0 {
		return "/var/lib/silo/queue"
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "silo", "queue")
	}
	return filepath.Join(getenv("HOME"), ".local", "state", "silo", "queue")
}
