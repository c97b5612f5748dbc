package nixconf

import (
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// Kind is how a setting's value is parsed, as Nix's BaseSetting<T>.
type Kind uint8

// Setting kinds.
const (
	KindBool      Kind = iota + 1 // true/yes/1, false/no/0
	KindInt                       // a signed decimal integer
	KindUint                      // an unsigned decimal integer
	KindString                    // any text
	KindPath                      // an absolute path, made canonical
	KindStrings                   // whitespace-separated words, in order; appendable
	KindStringSet                 // whitespace-separated words, sorted, unique; appendable
	KindStringMap                 // name=value words; appendable
	KindFeatures                  // experimental feature names; appendable
	KindSandbox                   // true, false or relaxed
	KindMaxJobs                   // "auto" or an unsigned integer
)

// Appendable reports whether extra-<name> may add to a setting of kind k.
func (k Kind) Appendable() bool {
	switch k {
	case KindStrings, KindStringSet, KindStringMap, KindFeatures:
		return true
	}
	return false
}

type def struct {
	name       string
	kind       Kind
	bits       int // integer kinds: the width of Nix's C++ type
	allowEmpty bool
	aliases    []string
	// dflt returns the default in Nix's to_string form.
	dflt func(d *Dirs) string
}

func is(v string) func(*Dirs) string { return func(*Dirs) string { return v } }

// defs are every setting Nix 2.8's nix-daemon knows (the libstore,
// libexpr, libfetchers, file transfer, archive and logger settings),
// with Nix's defaults on Linux.
var defs = []def{
	{name: "accept-flake-config", kind: KindBool, dflt: is("false")},
	{name: "access-tokens", kind: KindStringMap, dflt: is("")},
	{name: "allow-dirty", kind: KindBool, dflt: is("true")},
	{name: "allow-import-from-derivation", kind: KindBool, dflt: is("true")},
	{name: "allow-new-privileges", kind: KindBool, dflt: is("false")},
	{name: "allow-symlinked-store", kind: KindBool, dflt: func(d *Dirs) string { return strconv.FormatBool(d.env("NIX_IGNORE_SYMLINK_STORE") == "1") }},
	{name: "allow-unsafe-native-code-during-evaluation", kind: KindBool, dflt: is("false")},
	{name: "allowed-impure-host-deps", kind: KindStringSet, dflt: is("")},
	{name: "allowed-uris", kind: KindStrings, dflt: is("")},
	{name: "allowed-users", kind: KindStrings, dflt: is("*")},
	{name: "auto-optimise-store", kind: KindBool, dflt: is("false")},
	{name: "bash-prompt", kind: KindString, dflt: is("")},
	{name: "bash-prompt-suffix", kind: KindString, dflt: is("")},
	{name: "build-hook", kind: KindPath, allowEmpty: true, dflt: func(d *Dirs) string { return d.Libexec + "/nix/build-remote" }},
	{name: "build-poll-interval", kind: KindUint, bits: 32, dflt: is("5")},
	{name: "build-users-group", kind: KindString, dflt: func(*Dirs) string {
		if os.Getuid() == 0 {
			return "nixbld"
		}
		return ""
	}},
	{name: "builders", kind: KindString, dflt: func(d *Dirs) string { return d.defaultBuilders() }},
	{name: "builders-use-substitutes", kind: KindBool, dflt: is("false")},
	{name: "commit-lockfile-summary", kind: KindString, dflt: is("")},
	{name: "compress-build-log", kind: KindBool, aliases: []string{"build-compress-log"}, dflt: is("true")},
	{name: "connect-timeout", kind: KindUint, bits: 64, dflt: is("0")},
	{name: "cores", kind: KindUint, bits: 32, aliases: []string{"build-cores"}, dflt: func(*Dirs) string { return strconv.Itoa(max(1, runtime.NumCPU())) }},
	{name: "diff-hook", kind: KindPath, allowEmpty: true, dflt: is("")},
	{name: "download-attempts", kind: KindUint, bits: 32, dflt: is("5")},
	{name: "enforce-determinism", kind: KindBool, dflt: is("true")},
	{name: "eval-cache", kind: KindBool, dflt: is("true")},
	{name: "experimental-features", kind: KindFeatures, dflt: is("")},
	{name: "extra-platforms", kind: KindStringSet, dflt: func(*Dirs) string { return defaultExtraPlatforms() }},
	{name: "fallback", kind: KindBool, aliases: []string{"build-fallback"}, dflt: is("false")},
	{name: "filter-syscalls", kind: KindBool, dflt: is("true")},
	{name: "flake-registry", kind: KindString, dflt: is("https://github.com/NixOS/flake-registry/raw/master/flake-registry.json")},
	{name: "fsync-metadata", kind: KindBool, dflt: is("true")},
	{name: "gc-reserved-space", kind: KindInt, bits: 64, dflt: is("8388608")},
	{name: "hashed-mirrors", kind: KindStrings, dflt: is("")},
	{name: "http-connections", kind: KindUint, bits: 64, aliases: []string{"binary-caches-parallel-connections"}, dflt: is("25")},
	{name: "http2", kind: KindBool, dflt: is("true")},
	{name: "ignored-acls", kind: KindStringSet, dflt: is("security.selinux system.nfs4_acl")},
	{name: "impersonate-linux-26", kind: KindBool, aliases: []string{"build-impersonate-linux-26"}, dflt: is("false")},
	{name: "keep-build-log", kind: KindBool, aliases: []string{"build-keep-log"}, dflt: is("true")},
	{name: "keep-derivations", kind: KindBool, aliases: []string{"gc-keep-derivations"}, dflt: is("true")},
	{name: "keep-env-derivations", kind: KindBool, aliases: []string{"env-keep-derivations"}, dflt: is("false")},
	{name: "keep-failed", kind: KindBool, dflt: is("false")},
	{name: "keep-going", kind: KindBool, dflt: is("false")},
	{name: "keep-outputs", kind: KindBool, aliases: []string{"gc-keep-outputs"}, dflt: is("false")},
	{name: "log-lines", kind: KindUint, bits: 64, dflt: is("10")},
	{name: "max-build-log-size", kind: KindUint, bits: 64, aliases: []string{"build-max-log-size"}, dflt: is("0")},
	{name: "max-free", kind: KindUint, bits: 64, dflt: is("18446744073709551615")},
	{name: "max-jobs", kind: KindMaxJobs, aliases: []string{"build-max-jobs"}, dflt: is("1")},
	{name: "max-silent-time", kind: KindInt, bits: 64, aliases: []string{"build-max-silent-time"}, dflt: is("0")},
	{name: "min-free", kind: KindUint, bits: 64, dflt: is("0")},
	{name: "min-free-check-interval", kind: KindUint, bits: 64, dflt: is("5")},
	{name: "nar-buffer-size", kind: KindUint, bits: 64, dflt: is("33554432")},
	{name: "narinfo-cache-negative-ttl", kind: KindUint, bits: 32, dflt: is("3600")},
	{name: "narinfo-cache-positive-ttl", kind: KindUint, bits: 32, dflt: is("2592000")},
	{name: "netrc-file", kind: KindString, dflt: func(d *Dirs) string { return d.Conf + "/netrc" }},
	{name: "nix-path", kind: KindStrings, dflt: is("")},
	{name: "plugin-files", kind: KindStrings, dflt: is("")},
	{name: "post-build-hook", kind: KindString, dflt: is("")},
	{name: "pre-build-hook", kind: KindString, dflt: is("")},
	{name: "preallocate-contents", kind: KindBool, dflt: is("false")},
	{name: "print-missing", kind: KindBool, dflt: is("true")},
	{name: "pure-eval", kind: KindBool, dflt: is("false")},
	{name: "repeat", kind: KindUint, bits: 64, aliases: []string{"build-repeat"}, dflt: is("0")},
	{name: "require-sigs", kind: KindBool, dflt: is("true")},
	{name: "restrict-eval", kind: KindBool, dflt: is("false")},
	{name: "run-diff-hook", kind: KindBool, dflt: is("false")},
	{name: "sandbox", kind: KindSandbox, aliases: []string{"build-use-chroot", "build-use-sandbox"}, dflt: is("true")},
	{name: "sandbox-build-dir", kind: KindString, dflt: is("/build")},
	{name: "sandbox-dev-shm-size", kind: KindString, dflt: is("50%")},
	{name: "sandbox-fallback", kind: KindBool, dflt: is("true")},
	{name: "sandbox-paths", kind: KindStringSet, aliases: []string{"build-chroot-dirs", "build-sandbox-paths"}, dflt: is("")},
	{name: "secret-key-files", kind: KindStrings, dflt: is("")},
	{name: "show-trace", kind: KindBool, dflt: is("false")},
	{name: "stalled-download-timeout", kind: KindUint, bits: 64, dflt: is("300")},
	{name: "store", kind: KindString, dflt: func(d *Dirs) string {
		if v, ok := d.lookup("NIX_REMOTE"); ok {
			return v
		}
		return "auto"
	}},
	{name: "substitute", kind: KindBool, aliases: []string{"build-use-substitutes"}, dflt: is("true")},
	{name: "substituters", kind: KindStrings, aliases: []string{"binary-caches"}, dflt: is("https://cache.nixos.org/")},
	{name: "sync-before-registering", kind: KindBool, dflt: is("false")},
	{name: "system", kind: KindString, dflt: func(*Dirs) string { return System() }},
	{name: "system-features", kind: KindStringSet, dflt: func(*Dirs) string { return defaultSystemFeatures() }},
	{name: "tarball-ttl", kind: KindUint, bits: 32, dflt: is("3600")},
	{name: "timeout", kind: KindInt, bits: 64, aliases: []string{"build-timeout"}, dflt: is("0")},
	{name: "trace-function-calls", kind: KindBool, dflt: is("false")},
	{name: "trusted-public-keys", kind: KindStrings, aliases: []string{"binary-cache-public-keys"}, dflt: is("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")},
	{name: "trusted-substituters", kind: KindStringSet, aliases: []string{"trusted-binary-caches"}, dflt: is("")},
	{name: "trusted-users", kind: KindStrings, dflt: is("root")},
	{name: "use-case-hack", kind: KindBool, dflt: is("false")},
	{name: "use-registries", kind: KindBool, dflt: is("true")},
	{name: "use-sqlite-wal", kind: KindBool, dflt: is("true")},
	{name: "user-agent-suffix", kind: KindString, dflt: is("")},
	{name: "warn-dirty", kind: KindBool, dflt: is("true")},
}

// byName maps every setting name and alias to its definition.
var byName = func() map[string]*def {
	m := make(map[string]*def, 2*len(defs))
	for i := range defs {
		d := &defs[i]
		m[d.name] = d
		for _, a := range d.aliases {
			m[a] = d
		}
	}
	return m
}()

// Lookup returns the canonical name and kind of a setting given by its
// name or an alias; ok is false for names Nix 2.8 does not know.
func Lookup(name string) (canonical string, kind Kind, ok bool) {
	d, ok := byName[name]
	if !ok {
		return "", 0, false
	}
	return d.name, d.kind, true
}

// Names returns the canonical names of every known setting, sorted.
func Names() []string {
	names := make([]string, len(defs))
	for i, d := range defs {
		names[i] = d.name
	}
	return names
}

// Features are the experimental features Nix 2.8 knows.
var Features = []string{"ca-derivations", "fetch-closure", "flakes", "impure-derivations", "nix-command", "no-url-literals", "recursive-nix"}

// System returns Nix's name for this platform ("x86_64-linux").
func System() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "arm": "armv7l",
		"riscv64": "riscv64", "ppc64le": "powerpc64le", "s390x": "s390x", "mips64": "mips64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-" + runtime.GOOS
}

func defaultSystemFeatures() string {
	f := "benchmark big-parallel"
	if unix.Access("/dev/kvm", unix.R_OK|unix.W_OK) == nil {
		f += " kvm"
	}
	return f + " nixos-test"
}

// defaultExtraPlatforms is Nix's getDefaultExtraPlatforms on Linux: i686
// on x86_64 and the x86-64 micro-architecture levels the CPU supports
// (judged from the CPUID flags Go exposes).
func defaultExtraPlatforms() string {
	if runtime.GOARCH != "amd64" || runtime.GOOS != "linux" {
		return ""
	}
	p := "i686-linux x86_64-v1-linux"
	x := cpu.X86
	v2 := x.HasPOPCNT && x.HasSSE3 && x.HasSSE41 && x.HasSSE42 && x.HasSSSE3
	v3 := v2 && x.HasAVX && x.HasAVX2 && x.HasBMI1 && x.HasBMI2 && x.HasFMA && x.HasOSXSAVE
	v4 := v3 && x.HasAVX512F && x.HasAVX512BW && x.HasAVX512CD && x.HasAVX512DQ && x.HasAVX512VL
	if v2 {
		p += " x86_64-v2-linux"
	}
	if v3 {
		p += " x86_64-v3-linux"
	}
	if v4 {
		p += " x86_64-v4-linux"
	}
	return p
}
