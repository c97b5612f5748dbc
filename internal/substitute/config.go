package substitute

import (
	"time"

	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/signature"
)

// Config is what a connection's settings say about substitution. The zero
// value substitutes nothing.
type Config struct {
	// UseSubstitutes is the client's `substitute` (SetOptions'
	// useSubstitutes): false means no substituter is asked anything.
	UseSubstitutes bool
	// Substituters are the cache URIs in configured order (duplicates are
	// dropped; they are then sorted by priority). Taken at first use.
	Substituters []string
	// TrustedKeys are trusted-public-keys plus the public halves of the
	// readable secret-key-files. Taken at first use.
	TrustedKeys *signature.KeySet
	// RequireSigs is the store's require-sigs (Nix snapshots it when the
	// connection's store is opened, before SetOptions).
	RequireSigs bool
	// TryFallback is `fallback`: an error of a substituter is reported
	// and the next one tried, instead of failing the operation.
	TryFallback bool
	// PositiveTTL and NegativeTTL bound how long a narinfo lookup (found,
	// not found) is reused (narinfo-cache-positive-ttl, -negative-ttl).
	PositiveTTL, NegativeTTL time.Duration
	// NetrcFile holds credentials for http caches (netrc-file); a missing
	// file means none.
	NetrcFile string
	// ConnectTimeout bounds connecting to a cache (connect-timeout; 0 is
	// curl's default, 300 s).
	ConnectTimeout time.Duration
	// StalledTimeout aborts a transfer that receives nothing for this long
	// (stalled-download-timeout; 0 means 300 s).
	StalledTimeout time.Duration
	// DownloadAttempts is how often a transient failure is tried
	// (download-attempts; 0 means once).
	DownloadAttempts int
	// HTTPConnections bounds concurrent narinfo lookups of one operation
	// (http-connections; 0 means 25).
	HTTPConnections int
	// UserAgentSuffix is appended to the User-Agent (user-agent-suffix).
	UserAgentSuffix string
}

// ConfigFromSettings reads a Config from a connection's settings. The
// caller sets TrustedKeys and RequireSigs, which Nix takes from the store.
func ConfigFromSettings(s *nixconf.Settings) Config {
	secs := func(name string) time.Duration { return time.Duration(s.Uint(name)) * time.Second }
	return Config{
		UseSubstitutes:   s.Bool("substitute"),
		Substituters:     s.List("substituters"),
		TryFallback:      s.Bool("fallback"),
		PositiveTTL:      secs("narinfo-cache-positive-ttl"),
		NegativeTTL:      secs("narinfo-cache-negative-ttl"),
		NetrcFile:        s.String("netrc-file"),
		ConnectTimeout:   secs("connect-timeout"),
		StalledTimeout:   secs("stalled-download-timeout"),
		DownloadAttempts: int(min(s.Uint("download-attempts"), 100)),
		HTTPConnections:  int(min(s.Uint("http-connections"), 1024)),
		UserAgentSuffix:  s.String("user-agent-suffix"),
	}
}

func (c *Config) connectTimeout() time.Duration {
	if c.ConnectTimeout <= 0 {
		return 300 * time.Second
	}
	return c.ConnectTimeout
}

func (c *Config) stalledTimeout() time.Duration {
	if c.StalledTimeout <= 0 {
		return 300 * time.Second
	}
	return c.StalledTimeout
}

func (c *Config) attempts() int { return max(c.DownloadAttempts, 1) }

func (c *Config) httpConnections() int {
	if c.HTTPConnections <= 0 {
		return 25
	}
	return c.HTTPConnections
}
