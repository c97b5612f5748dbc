package listen

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
)

// Certificate is a TLS certificate read from a certificate file (PEM, the
// chain after the leaf) and a key file, read again by Reload, so that a
// renewed certificate is served without a restart (silo serve and silo
// publish reload on SIGHUP).
type Certificate struct {
	certFile, keyFile string
	mu                sync.RWMutex
	cert              *tls.Certificate
}

// LoadCertificate reads the certificate and key files.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again. On error the certificate served so far
// stays in use.
func (c *Certificate) Reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.mu.Lock()
	c.cert = &cert
	c.mu.Unlock()
	return nil
}

func (c *Certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, nil
}

// TLS returns a listener serving TLS with cert on the connections l
// accepts. It offers HTTP/1.1 only: the per-connection protections of
// Guard follow HTTP/1.x framing.
func TLS(l net.Listener, cert *Certificate) net.Listener {
	return tls.NewListener(l, &tls.Config{
		GetCertificate: cert.get,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
	})
}
