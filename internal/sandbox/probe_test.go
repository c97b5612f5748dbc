package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// probe runs as a builder (argv[0] "probe") and reports what it can do:
// one line per check, "name: ok" or "name: <error>".
func probe(checks []string) int {
	for _, c := range checks {
		name, arg, _ := strings.Cut(c, "=")
		var err error
		switch name {
		case "setxattr":
			err = unix.Setxattr(arg, "user.silo", []byte("x"), 0)
		case "chmod-setuid":
			err = unix.Chmod(arg, 0o4755)
		case "fchmodat-setgid":
			err = unix.Fchmodat(unix.AT_FDCWD, arg, 0o2755, 0)
		case "chmod-plain":
			err = unix.Chmod(arg, 0o755)
		case "connect":
			var conn net.Conn
			conn, err = net.Dial("tcp", arg)
			if err == nil {
				conn.Close()
			}
		case "loopback":
			var ln net.Listener
			ln, err = net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				var conn net.Conn
				conn, err = net.Dial("tcp", ln.Addr().String())
				if err == nil {
					conn.Close()
				}
				ln.Close()
			}
		case "status":
			var b []byte
			b, err = os.ReadFile("/proc/self/status")
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, arg+":") {
					fmt.Printf("%s\n", l)
				}
			}
		default:
			err = errors.New("unknown check")
		}
		if err == nil {
			fmt.Printf("%s: ok\n", name)
		} else {
			fmt.Printf("%s: %v\n", name, err)
		}
	}
	return 0
}
