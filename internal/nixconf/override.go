package nixconf

import (
	"slices"
	"strconv"
	"strings"
)

// ClientOptions are the settings a client sends in SetOptions: fixed fields
// first, then the settings it overrides by name.
type ClientOptions struct {
	KeepFailed     bool
	KeepGoing      bool
	TryFallback    bool
	Verbosity      uint64
	MaxBuildJobs   uint64
	MaxSilentTime  uint64
	VerboseBuild   bool
	BuildCores     uint64
	UseSubstitutes bool
	Overrides      [][2]string // name, value; in the order received
}

// ApplyClient applies a client's options to s as Nix 2.8's daemon does
// (ClientSettings::apply): the fixed fields always; the overrides only
// if trusted, except timeout, repeat, connect-timeout, an empty builders
// and substituters (which an untrusted client may narrow to those in
// trusted-substituters or substituters). experimental-features and
// ssh-auth-sock are ignored for everyone. Bad values are reported to
// warn, ignored settings to debug, and leave s unchanged.
func (s *Settings) ApplyClient(o *ClientOptions, trusted bool, warn, debug func(string)) {
	if warn == nil {
		warn = func(string) {}
	}
	if debug == nil {
		debug = func(string) {}
	}
	s.vals["keep-failed"] = fmtBool(o.KeepFailed)
	s.vals["keep-going"] = fmtBool(o.KeepGoing)
	s.vals["fallback"] = fmtBool(o.TryFallback)
	s.vals["max-jobs"] = fmtUint(uint64(uint32(o.MaxBuildJobs)))
	s.vals["max-silent-time"] = fmtUint(o.MaxSilentTime)
	s.vals["cores"] = fmtUint(uint64(uint32(o.BuildCores)))
	s.vals["substitute"] = fmtBool(o.UseSubstitutes)

	for _, kv := range o.Overrides {
		name, value := kv[0], kv[1]
		switch {
		case name == "ssh-auth-sock": // obsolete
		case name == "experimental-features":
			debug("Ignoring the client-specified experimental features")
		case trusted || name == "timeout" || name == "build-timeout" || name == "repeat" || name == "build-repeat" ||
			name == "connect-timeout" || (name == "builders" && value == ""):
			if _, err := s.Set(name, value); err != nil {
				warn(err.Error())
			}
		case name == "substituters" || name == "binary-caches":
			s.setTrustedSubstituters(value, warn)
		default:
			debug("ignoring the client-specified setting '" + name + "', because it is a restricted setting and you are not a trusted user")
		}
	}
}

// setTrustedSubstituters sets substituters to those of value that the
// daemon's configuration allows (trusted-substituters ∪ substituters,
// also matching with a trailing slash added).
func (s *Settings) setTrustedSubstituters(value string, warn func(string)) {
	allowed := append(s.List("trusted-substituters"), s.List("substituters")...)
	var subs []string
	for _, u := range tokenize(value) {
		switch {
		case slices.Contains(allowed, u):
			subs = append(subs, u)
		case !strings.HasSuffix(u, "/") && slices.Contains(allowed, u+"/"):
			subs = append(subs, u+"/")
		default:
			warn("ignoring untrusted substituter '" + u + "'")
		}
	}
	s.vals["substituters"] = strings.Join(subs, " ")
}

func fmtBool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func fmtUint(n uint64) string { return strconv.FormatUint(n, 10) }
