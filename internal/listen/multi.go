package listen

import (
	"net"
	"sync"
)

// multi accepts on several listeners as one: a socket unit may pass more
// than one socket (ListenStream for IPv4 and IPv6, TCP and a unix socket
// for a proxy), and each must be served. Addr is the first listener's.
type multi struct {
	ls    []net.Listener
	conns chan accepted
	done  chan struct{}
	once  sync.Once
}

type accepted struct {
	c   net.Conn
	err error
}

func merge(ls []net.Listener) net.Listener {
	m := &multi{ls: ls, conns: make(chan accepted), done: make(chan struct{})}
	for _, l := range ls {
		go m.loop(l)
	}
	return m
}

// loop hands each connection of l to Accept; it stops at l's first
// error (after handing that on) or when m is closed.
func (m *multi) loop(l net.Listener) {
	for {
		c, err := l.Accept()
		select {
		case m.conns <- accepted{c, err}:
		case <-m.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
	}
}

func (m *multi) Accept() (net.Conn, error) {
	select {
	case a := <-m.conns:
		return a.c, a.err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multi) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.ls {
			if cerr := l.Close(); err == nil {
				err = cerr
			}
		}
	})
	return err
}

func (m *multi) Addr() net.Addr { return m.ls[0].Addr() }
