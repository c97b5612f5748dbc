// Command load is bench/publish.sh's HTTP load generator: it fetches a list
// of URLs over a fixed number of keep-alive connections and reports the
// request rate and body throughput. It exists so that silo publish and
// nginx are measured by the same client.
//
//	load -c 16 -urls FILE [-rounds N | -duration D]
//
// Every URL must answer 200 with the body length it announces; any other
// answer is an error, so a fast server cannot win by failing.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	conns := flag.Int("c", 16, "parallel connections")
	urlFile := flag.String("urls", "", "file with one URL per line")
	rounds := flag.Int("rounds", 1, "times to fetch every URL (ignored with -duration)")
	duration := flag.Duration("duration", 0, "fetch the URLs round-robin for this long instead of -rounds times")
	label := flag.String("label", "", "label printed with the result")
	flag.Parse()
	urls, err := readLines(*urlFile)
	if err != nil || len(urls) == 0 {
		fmt.Fprintf(os.Stderr, "load: -urls %q: %v (want a file with one URL per line)\n", *urlFile, err)
		os.Exit(2)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns, DisableCompression: true}
	client := &http.Client{Transport: tr}

	ctx := context.Background()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	var next atomic.Int64
	total := int64(len(urls) * *rounds)
	var reqs, bytes atomic.Int64
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				i := next.Add(1) - 1
				if *duration == 0 && i >= total {
					return
				}
				if ctx.Err() != nil {
					return
				}
				n, err := fetch(ctx, client, urls[i%int64(len(urls))], buf)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					errOnce.Do(func() { firstErr = err })
					return
				}
				reqs.Add(1)
				bytes.Add(n)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "load: %v\n", firstErr)
		os.Exit(1)
	}
	secs := elapsed.Seconds()
	fmt.Printf("%s requests=%d bytes=%d seconds=%.3f req_per_s=%.0f MiB_per_s=%.1f\n",
		*label, reqs.Load(), bytes.Load(), secs, float64(reqs.Load())/secs, float64(bytes.Load())/secs/(1<<20))
}

func fetch(ctx context.Context, c *http.Client, url string, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// Hide io.Discard's ReadFrom so that reads use buf's size.
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
	if err != nil {
		return n, fmt.Errorf("GET %s: body: %w", url, err)
	}
	if resp.StatusCode != 200 {
		return n, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("GET %s: %d body bytes, announced %d", url, n, resp.ContentLength)
	}
	return n, nil
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
