package nixgc

import (
	"bufio"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
)

// shared is what the collector and its roots server share: the hash parts
// of temp roots (so that ".lock", ".chroot" and ".check" siblings count
// too) and those of the paths being deleted right now.
type shared struct {
	mu        sync.Mutex
	cond      *sync.Cond
	tempRoots map[string]bool
	pending   map[string]bool
}

func newShared() *shared {
	sh := &shared{tempRoots: map[string]bool{}, pending: map[string]bool{}}
	sh.cond = sync.NewCond(&sh.mu)
	return sh
}

// rootsServer accepts temp roots from processes that found gc.lock taken,
// on <state>/gc-socket/socket, as Nix's collector does: each line is a
// store path; the reply "1" is sent once the path is a temp root and is
// not being deleted.
type rootsServer struct {
	ln    *net.UnixListener
	sh    *shared
	s     *nixstore.Store
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	done  bool
}

// maxRootLine bounds a line from a client (the socket is world-writable).
const maxRootLine = 4096

func startRootsServer(s *nixstore.Store, sh *shared) (*rootsServer, error) {
	path := filepath.Join(s.StateDir(), "gc-socket", "socket")
	if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
		return nil, err
	}
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Like Nix, leave the socket file when done: a client that connects
	// afterwards gets "connection refused" and retries gc.lock.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	rs := &rootsServer{ln: ln, sh: sh, s: s, conns: map[net.Conn]bool{}}
	rs.wg.Add(1)
	go rs.accept()
	return rs, nil
}

func (rs *rootsServer) accept() {
	defer rs.wg.Done()
	for {
		c, err := rs.ln.Accept()
		if err != nil {
			return
		}
		rs.mu.Lock()
		if rs.done {
			rs.mu.Unlock()
			c.Close()
			return
		}
		rs.conns[c] = true
		rs.mu.Unlock()
		rs.wg.Add(1)
		go rs.serve(c)
	}
}

func (rs *rootsServer) serve(c net.Conn) {
	defer rs.wg.Done()
	defer func() {
		rs.mu.Lock()
		delete(rs.conns, c)
		rs.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReaderSize(c, maxRootLine)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				rs.s.Log(nixstore.LvlError, "received garbage instead of a root from client")
			}
			return
		}
		p, err := rs.s.Dir().Parse(string(line[:len(line)-1]))
		if err == nil {
			rs.addRoot(p)
		} else {
			rs.s.Log(nixstore.LvlError, "received garbage instead of a root from client")
		}
		if _, err := c.Write([]byte("1")); err != nil {
			return
		}
	}
}

// addRoot records a temp root, waiting while its path is being deleted
// so that the client does not start re-creating it before that is done.
func (rs *rootsServer) addRoot(p storepath.Path) {
	h := p.HashPart()
	sh := rs.sh
	sh.mu.Lock()
	sh.tempRoots[h] = true
	for sh.pending[h] {
		sh.cond.Wait()
	}
	sh.mu.Unlock()
}

func (rs *rootsServer) stop() {
	rs.mu.Lock()
	rs.done = true
	for c := range rs.conns {
		c.Close()
	}
	rs.mu.Unlock()
	rs.ln.Close()
	rs.sh.mu.Lock()
	rs.sh.cond.Broadcast()
	rs.sh.mu.Unlock()
	rs.wg.Wait()
}
