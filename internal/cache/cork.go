package cache

import (
	"context"
	"net"
	"net/http"
	"syscall"
)

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it lets the server reach a
// request's TCP connection, to cork it while it sends a stored file
// (see cork). Without it files are sent uncorked, which is correct but
// costs more packets and wake-ups per file.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	// Below wrappers (listen.Conn, tls.Conn) that expose what they wrap.
	for range 4 {
		if tc, ok := c.(*net.TCPConn); ok {
			return context.WithValue(ctx, connKey{}, tc)
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	return ctx
}

// cork holds back partial TCP segments on the request's connection (as
// nginx's tcp_nopush does around sendfile), so that the response header
// and the file go out in full segments, and returns the function that
// releases them. It does nothing for HEAD requests or connections
// ConnContext did not record.
func cork(r *http.Request) (uncork func()) {
	tc, _ := r.Context().Value(connKey{}).(*net.TCPConn)
	if tc == nil || r.Method == http.MethodHead {
		return func() {}
	}
	rc, err := tc.SyscallConn()
	if err != nil || !setCork(rc, true) {
		return func() {}
	}
	return func() { setCork(rc, false) }
}

// setCork sets or clears TCP_CORK; clearing it sends what was held back.
func setCork(rc syscall.RawConn, on bool) bool {
	var err error
	v := 0
	if on {
		v = 1
	}
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v)
	}); cerr != nil {
		return false
	}
	return err == nil
}
