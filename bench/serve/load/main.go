// Command load is bench/serve.sh's HTTP load generator: it fetches a list
// of URLs (all on one host) over a fixed number of keep-alive HTTP/1.1
// connections and reports the request rate, the body throughput and the
// CPU time the client itself used, so that a reader can tell whether the
// client or the server was the bottleneck. silo serve and nginx are
// measured by the same client.
//
//	load -c 16 -urls FILE [-rounds N | -duration D] [-content-type T]
//
// It speaks just enough HTTP/1.1 to stay cheap (a pre-built GET per URL,
// one read buffer per connection), so that on a shared machine most CPU
// goes to the server under test. Every answer must be 200 with a
// Content-Length the body matches (and, with -content-type, that
// Content-Type); anything else is an error, so a fast server cannot win
// by failing.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	conns := flag.Int("c", 16, "parallel connections")
	urlFile := flag.String("urls", "", "file with one URL per line, all http:// on the same host")
	rounds := flag.Int("rounds", 1, "times to fetch every URL (ignored with -duration)")
	duration := flag.Duration("duration", 0, "fetch the URLs round-robin for this long instead of -rounds times")
	contentType := flag.String("content-type", "", "Content-Type every answer must have (default: not checked)")
	label := flag.String("label", "", "label printed with the result")
	flag.Parse()
	lines, err := readLines(*urlFile)
	if err == nil && len(lines) == 0 {
		err = errors.New("no URLs")
	}
	var host string
	var reqs [][]byte
	if err == nil {
		host, reqs, err = buildRequests(lines)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: -urls %q: %v (want a file with one http:// URL per line, one host)\n", *urlFile, err)
		os.Exit(2)
	}

	ctx := context.Background()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	var next atomic.Int64
	total := int64(len(reqs) * *rounds)
	var nreq, nbytes atomic.Int64
	var firstErr error
	var errOnce sync.Once
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *conn
			defer func() {
				if c != nil {
					c.nc.Close()
				}
			}()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if *duration == 0 && i >= total {
					return
				}
				k := i % int64(len(reqs))
				if c == nil {
					var err error
					if c, err = dial(ctx, host); err != nil {
						errOnce.Do(func() { firstErr = err })
						return
					}
				}
				n, keep, err := c.get(reqs[k], *contentType)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					errOnce.Do(func() { firstErr = fmt.Errorf("GET %s: %w", lines[k], err) })
					return
				}
				if !keep {
					c.nc.Close()
					c = nil
				}
				nreq.Add(1)
				nbytes.Add(n)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "load: %v\n", firstErr)
		os.Exit(1)
	}
	secs := elapsed.Seconds()
	fmt.Printf("%s requests=%d bytes=%d seconds=%.3f req_per_s=%.0f MiB_per_s=%.1f client_cpu=%.0f%%\n",
		*label, nreq.Load(), nbytes.Load(), secs, float64(nreq.Load())/secs, float64(nbytes.Load())/secs/(1<<20),
		100*cpu.Seconds()/secs)
}

// buildRequests returns the host:port all URLs share and one GET request
// per URL.
func buildRequests(lines []string) (string, [][]byte, error) {
	var host string
	reqs := make([][]byte, len(lines))
	for i, l := range lines {
		u, err := url.Parse(l)
		if err != nil {
			return "", nil, err
		}
		if u.Scheme != "http" || u.User != nil {
			return "", nil, fmt.Errorf("%s: only plain http:// URLs", l)
		}
		if host == "" {
			host = u.Host
		} else if u.Host != host {
			return "", nil, fmt.Errorf("%s: host %s, earlier URLs %s", l, u.Host, host)
		}
		reqs[i] = []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: silo-bench-load\r\n\r\n")
	}
	return host, reqs, nil
}

type conn struct {
	nc  net.Conn
	br  *bufio.Reader
	buf []byte
}

func dial(ctx context.Context, host string) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if ctx.Done() != nil {
		// Cut off a read in flight when the run ends.
		go func() {
			<-ctx.Done()
			nc.SetDeadline(time.Now())
		}()
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), buf: make([]byte, 256<<10)}, nil
}

// get sends req and reads the answer, returning the body's length and
// whether the connection may be reused.
func (c *conn) get(req []byte, wantType string) (int64, bool, error) {
	if _, err := c.nc.Write(req); err != nil {
		return 0, false, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, false, fmt.Errorf("status line: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return 0, false, fmt.Errorf("answered %q, want 200", bytes.TrimSpace(line))
	}
	length := int64(-1)
	keep := true
	typeOK := wantType == ""
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, false, fmt.Errorf("headers: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, fmt.Errorf("header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return 0, false, fmt.Errorf("Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Content-Type")):
			if !typeOK && string(value) != wantType {
				return 0, false, fmt.Errorf("Content-Type %q, want %q", value, wantType)
			}
			typeOK = true
		case bytes.EqualFold(name, []byte("Connection")):
			keep = !bytes.EqualFold(value, []byte("close"))
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, false, fmt.Errorf("Transfer-Encoding %q: want a Content-Length", value)
		}
	}
	if length < 0 {
		return 0, false, errors.New("no Content-Length")
	}
	if !typeOK {
		return 0, false, fmt.Errorf("no Content-Type, want %q", wantType)
	}
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, io.LimitReader(c.br, length), c.buf)
	if err == nil && n < length {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, false, fmt.Errorf("body: %d of %d bytes: %w", n, length, err)
	}
	return n, keep, nil
}

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
	}
	return lines, sc.Err()
}
