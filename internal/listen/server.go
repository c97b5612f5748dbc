package listen

import (
	"context"
	"log"
	"net"
	"net/http"
	"time"
)

// HTTPServer returns an http.Server serving h (wrapped in Protect) on
// Guard listeners, with bounded request headers. connContext, if not nil,
// is chained after ConnContext (it receives the *Conn).
func HTTPServer(h http.Handler, errorLog *log.Logger, connContext func(context.Context, net.Conn) context.Context) *http.Server {
	return &http.Server{
		Handler:           Protect(h),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Nix's requests carry a few hundred bytes of headers.
		MaxHeaderBytes: 32 << 10,
		ErrorLog:       errorLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			ctx = ConnContext(ctx, c)
			if connContext != nil {
				ctx = connContext(ctx, c)
			}
			return ctx
		},
	}
}
