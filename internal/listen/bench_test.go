package listen

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkSmallResponses measures a narinfo-sized answer over one
// keep-alive connection, plain and behind a Guard with Protect: what the
// guard costs per request.
func BenchmarkSmallResponses(b *testing.B) {
	body := strings.Repeat("n", 600)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	for _, guarded := range []bool{false, true} {
		name := "plain"
		if guarded {
			name = "guarded"
		}
		b.Run(name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var srv *http.Server
			if guarded {
				srv = HTTPServer(h, nil, nil)
				go srv.Serve(NewGuard(l, Limits{}, slog.New(slog.NewTextHandler(io.Discard, nil))))
			} else {
				srv = &http.Server{Handler: h}
				go srv.Serve(l)
			}
			defer srv.Close()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /x.narinfo HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(c)
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				c.Write(req)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
			}
		})
	}
}
