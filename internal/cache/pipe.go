package cache

import (
	"io"
	"sync"
)

// asyncWriter hands what is written to it to another goroutine, which
// writes it to w (and closes w on Close), so that compressing the stored
// NAR runs beside decompressing and checking the upload, on another core.
// Memory is bounded: at most asyncDepth buffers of up to asyncBuf bytes are
// in flight. The first error of w is returned by later Writes and by Close.
type asyncWriter struct {
	w    io.WriteCloser
	ch   chan []byte
	done chan struct{}
	mu   sync.Mutex
	err  error
}

const (
	asyncDepth = 8
	asyncBuf   = 128 << 10
)

var asyncPool = sync.Pool{New: func() any { b := make([]byte, 0, asyncBuf); return &b }}

func newAsyncWriter(w io.WriteCloser) *asyncWriter {
	a := &asyncWriter{w: w, ch: make(chan []byte, asyncDepth), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *asyncWriter) run() {
	defer close(a.done)
	for b := range a.ch {
		if a.error() == nil {
			if _, err := a.w.Write(b); err != nil {
				a.setError(err)
			}
		}
		b = b[:0]
		asyncPool.Put(&b)
	}
	if err := a.w.Close(); err != nil {
		a.setError(err)
	}
}

func (a *asyncWriter) error() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *asyncWriter) setError(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	if err := a.error(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		bp := asyncPool.Get().(*[]byte)
		k := min(len(p), cap(*bp))
		b := append((*bp)[:0], p[:k]...)
		a.ch <- b
		p = p[k:]
	}
	return n, nil
}

// Close waits for every write to be done, closes w and returns the first
// error. It must be called once, also after a failed upload (it stops the
// goroutine).
func (a *asyncWriter) Close() error {
	close(a.ch)
	<-a.done
	return a.error()
}
