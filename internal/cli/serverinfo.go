package cli

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/adminapi"
	"github.com/silo-cache/silo/internal/meta"
)

// serverInfoFile is where silo serve records, in its data directory, the
// URL clients reach it at, so that admin commands print that URL.
const serverInfoFile = "server.json"

type serverInfo struct {
	URL     string    `json:"url"` // "" when unknown (a unix socket without --url)
	Listen  string    `json:"listen"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// publicURL is the base URL clients use: --url, else what l listens on
// (a wildcard address replaced by the host name); "" for a unix socket.
func publicURL(flagURL string, l net.Listener) string {
	if flagURL != "" {
		return strings.TrimSuffix(flagURL, "/")
	}
	if l.Addr().Network() != "tcp" {
		return ""
	}
	host, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}

// recordServer writes server.json into dataDir atomically and returns the
// public URL recorded.
func recordServer(dataDir, flagURL string, l net.Listener) (string, error) {
	info := serverInfo{URL: publicURL(flagURL, l), Listen: l.Addr().Network() + ":" + l.Addr().String(),
		PID: os.Getpid(), Started: time.Now().UTC()}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return info.URL, err
	}
	f, err := os.CreateTemp(dataDir, ".server.json-*")
	if err != nil {
		return info.URL, fmt.Errorf("record server URL: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dataDir, serverInfoFile))
	}
	if err != nil {
		return info.URL, fmt.Errorf("record server URL in %s: %w", dataDir, err)
	}
	return info.URL, nil
}

// readServerInfo returns what silo serve last recorded in dataDir.
func readServerInfo(dataDir string) (serverInfo, bool) {
	var info serverInfo
	data, err := os.ReadFile(filepath.Join(dataDir, serverInfoFile))
	if err != nil || json.Unmarshal(data, &info) != nil {
		return serverInfo{}, false
	}
	return info, true
}

// recordServerURL records silo serve's public URL in its data directory
// (a failure is only logged: serving matters more) and returns it.
func recordServerURL(log *slog.Logger, dataDir, flagURL string, l net.Listener) string {
	pub, err := recordServer(dataDir, flagURL, l)
	if err != nil {
		log.Warn("admin commands will not know the server's URL", "err", err)
	}
	return pub
}

// withAdminAPI serves the admin API (adminapi.Prefix) beside the caches.
func withAdminAPI(caches http.Handler, m meta.Store, publicURL string, log *slog.Logger) http.Handler {
	api := adminapi.Handler(&adminapi.Service{Meta: m, BaseURL: func() string { return publicURL }}, log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if adminapi.IsAPI(r.URL.Path) {
			api.ServeHTTP(w, r)
			return
		}
		caches.ServeHTTP(w, r)
	})
}
