package listen

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

// genRequests writes n random requests as a client (or smuggler) might
// frame them: bodies by Content-Length or chunked (with extensions and
// trailers), HTTP/1.0 and 1.1, header names in any case, bodies holding
// text that looks like requests. bad is the index of the request given
// both Content-Length and Transfer-Encoding, or -1.
func genRequests(rng *rand.Rand, n, bad int) []byte {
	var b bytes.Buffer
	caseOf := func(s string) string {
		switch rng.IntN(3) {
		case 0:
			return strings.ToLower(s)
		case 1:
			return strings.ToUpper(s)
		}
		return s
	}
	body := func() []byte {
		parts := []string{"x", "\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n", "0\r\n\r\n", strings.Repeat("z", rng.IntN(5000))}
		var out []byte
		for range rng.IntN(4) {
			out = append(out, parts[rng.IntN(len(parts))]...)
		}
		return out
	}
	for i := range n {
		proto := "HTTP/1.1"
		if rng.IntN(5) == 0 {
			proto = "HTTP/1.0"
		}
		fmt.Fprintf(&b, "PUT /r%d %s\r\nHost: x\r\n", i, proto)
		if rng.IntN(2) == 0 {
			fmt.Fprintf(&b, "%s: %s\r\n", caseOf("X-Pad"), strings.Repeat("content-length: 5 ", rng.IntN(3)))
		}
		data := body()
		chunked := proto == "HTTP/1.1" && rng.IntN(2) == 0
		if i == bad {
			fmt.Fprintf(&b, "%s: %d\r\n%s: chunked\r\n\r\n", caseOf("Content-Length"), len(data), caseOf("Transfer-Encoding"))
			if proto == "HTTP/1.0" {
				b.Write(data)
			} else {
				fmt.Fprintf(&b, "%x\r\n%s\r\n0\r\n\r\n", len(data)+1, append(data, 'q'))
			}
			continue
		}
		if chunked {
			fmt.Fprintf(&b, "%s:  %s \r\n\r\n", caseOf("Transfer-Encoding"), caseOf("chunked"))
			for len(data) > 0 {
				k := 1 + rng.IntN(len(data))
				ext := ""
				if rng.IntN(3) == 0 {
					ext = ";name=value"
				}
				fmt.Fprintf(&b, "%x%s\r\n%s\r\n", k, ext, data[:k])
				data = data[k:]
			}
			b.WriteString("0\r\n")
			if rng.IntN(2) == 0 {
				b.WriteString("X-Trailer: done\r\n")
			}
			b.WriteString("\r\n")
		} else {
			fmt.Fprintf(&b, "%s: %d\r\n\r\n", caseOf("Content-Length"), len(data))
			b.Write(data)
		}
	}
	return b.Bytes()
}

// feedSplit feeds data to a new framer in random pieces.
func feedSplit(rng *rand.Rand, data []byte) framer {
	f := newFramer()
	for len(data) > 0 {
		k := 1 + rng.IntN(min(len(data), 700))
		f.feed(data[:k])
		data = data[k:]
	}
	return f
}

// The framer counts requests and finds the smuggled one exactly as
// net/http frames them, however the bytes arrive.
func TestFramerFollowsNetHTTP(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		n := 1 + rng.IntN(6)
		bad := -1
		if rng.IntN(2) == 0 {
			bad = rng.IntN(n)
		}
		data := genRequests(rng, n, bad)
		f := feedSplit(rng, data)
		if f.requests != n || f.firstBad != bad || f.inRequest() {
			t.Fatalf("round %d: framer saw %d requests (in one: %v), first bad %d; want %d, %d\n%q", round, f.requests, f.inRequest(), f.firstBad, n, bad, data)
		}
		// net/http parses the same requests.
		br := bufio.NewReader(bytes.NewReader(data))
		for i := range n {
			req, err := http.ReadRequest(br)
			if err != nil {
				t.Fatalf("round %d: net/http cannot read request %d: %v", round, i, err)
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				t.Fatalf("round %d: body of request %d: %v", round, i, err)
			}
			if req.URL.Path != fmt.Sprintf("/r%d", i) {
				t.Fatalf("round %d: net/http read %s as request %d", round, req.URL.Path, i)
			}
		}
		if _, err := br.Peek(1); err != io.EOF {
			t.Fatalf("round %d: net/http left bytes unread", round)
		}
	}
}

// FuzzFramer checks that the framer never panics and that how the bytes
// arrive does not change what it finds.
func FuzzFramer(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 8 {
		f.Add(genRequests(rng, 1+i%3, i%2-1), uint64(i))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		whole := newFramer()
		whole.feed(data)
		split := feedSplit(rand.New(rand.NewPCG(seed, 0)), data)
		if whole != split {
			t.Fatalf("fed whole: %+v; in pieces: %+v", whole, split)
		}
	})
}
