// Command narput is bench/scale.sh's upload load: it PUTs -n NARs of one
// regular file of -size bytes at once, as Nix uploads them, each streamed
// from a pseudo-random generator (never held in memory), to
// BASE/nar/<name>.nar with a push token from $SILO_TOKEN, and reports the
// time taken. Every answer must be 200.
//
//	narput -n 16 -size 1G [-same] BASE
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	n := flag.Int("n", 16, "uploads at once")
	sizeFlag := flag.String("size", "1G", "size of each NAR's file (K, M, G suffixes)")
	same := flag.Bool("same", false, "upload the same NAR every time (as clients pushing one path at once; the server then keeps one copy)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: narput [-n N] [-size SIZE] BASE")
		os.Exit(2)
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "narput:", err)
		os.Exit(2)
	}
	base := strings.TrimSuffix(flag.Arg(0), "/")
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, *n)
	for i := range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/nar/bench-%d-%d.nar", base, time.Now().UnixNano(), i), narReader(size, seed(*same, i)))
			req.SetBasicAuth("", os.Getenv("SILO_TOKEN"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("upload %d: %s: %s", i, resp.Status, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, "narput:", err)
		os.Exit(1)
	}
	fmt.Printf("narput uploads=%d size=%d seconds=%.1f\n", *n, size, time.Since(start).Seconds())
}

func seed(same bool, i int) uint64 {
	if same {
		return 0
	}
	return uint64(i) + 1
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	if i := strings.IndexAny(s, "KMG"); i == len(s)-1 {
		mult = 1 << (10 * (strings.IndexByte("KMG", s[i]) + 1))
		s = s[:i]
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number with K, M or G", s)
	}
	return v * mult, nil
}

// narReader streams a NAR of one regular file of size pseudo-random bytes.
func narReader(size int64, seed uint64) io.Reader {
	str := func(s string) []byte {
		b := make([]byte, 8+(len(s)+7)/8*8)
		for i := 0; i < 8; i++ {
			b[i] = byte(uint64(len(s)) >> (8 * i))
		}
		copy(b[8:], s)
		return b
	}
	var head []byte
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
		head = append(head, str(s)...)
	}
	lenb := make([]byte, 8)
	for i := 0; i < 8; i++ {
		lenb[i] = byte(uint64(size) >> (8 * i))
	}
	head = append(head, lenb...)
	tail := make([]byte, (8-size%8)%8)
	tail = append(tail, str(")")...)
	return io.MultiReader(strings.NewReader(string(head)), io.LimitReader(&random{rand.NewChaCha8([32]byte{byte(seed), 1})}, size), strings.NewReader(string(tail)))
}

type random struct{ r *rand.ChaCha8 }

func (r *random) Read(p []byte) (int, error) { return r.r.Read(p) }
