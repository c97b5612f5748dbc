// Package sandbox runs a Nix builder the way Nix 2.8 does on Linux: in new
// mount, PID, IPC, UTS and (unless the build may use the network) network
// namespaces, in a user namespace mapping the sandbox user 1000:100 to the
// build user where user namespaces are enabled, chrooted (pivot_root) into
// a directory holding only the input closure, the sandbox-paths, a minimal
// /dev, a fresh /proc and /etc/passwd, /etc/group and /etc/hosts as Nix
// writes them; with no_new_privs and Nix's seccomp filter; as a build user
// from a Pool shared with nix-daemon through <state>/userpool locks.
//
// Namespace set-up between clone and exec is done by re-executing the
// silo binary as a small init step (InitCommand, see Init), never by Go
// code in a forked child.
//
// Invariants:
//   - A sandboxed build sees only what Spec lists: Inputs, Paths, the
//     build directory, and the generated /dev, /proc, /etc, /tmp.
//   - Run never returns while a process of the build is alive: the PID
//     namespace dies with its init (the builder), an unsandboxed build's
//     process group is killed, and so is every process of the build user.
//   - The chroot is deleted only after checking that nothing is mounted
//     under it, so a leaked bind mount can never make Run delete an input.
//   - Run refuses a sandboxed build as root without a build user (the
//     builder would otherwise own every root-owned input).
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/storepath"
)

// DefaultBuildDir is where the build directory appears in the sandbox
// (Nix's sandbox-build-dir).
const DefaultBuildDir = "/build"

// Path is one entry of sandbox-paths: Source on the host appears at
// Target; a missing Optional source is skipped.
type Path struct {
	Target, Source string
	Optional       bool
}

// ParsePaths parses sandbox-paths entries as Nix does: "target=source" or
// "path", with a trailing "?" marking the entry optional.
func ParsePaths(entries []string) []Path {
	var out []Path
	for _, e := range entries {
		if e == "" {
			continue
		}
		p := Path{}
		if strings.HasSuffix(e, "?") {
			p.Optional = true
			e = e[:len(e)-1]
		}
		if t, s, ok := strings.Cut(e, "="); ok {
			p.Target, p.Source = t, s
		} else {
			p.Target, p.Source = e, e
		}
		out = append(out, p)
	}
	return out
}

// Spec describes one build.
type Spec struct {
	// Name names the chroot, <RealStoreDir>/<Name>.chroot; Nix uses the
	// .drv's base name.
	Name string
	// Builder is executed with argv[0] = its base name, then Args, in
	// exactly the environment Env ("NAME=value"); nothing is added.
	Builder string
	Args    []string
	Env     []string
	// BuildDir is the build's directory on the host, owned by the build
	// user; the builder starts in it (in SandboxBuildDir when sandboxed).
	BuildDir        string
	SandboxBuildDir string // default DefaultBuildDir
	// Sandboxed runs the builder in namespaces and a chroot; otherwise it
	// runs on the host (still as User, with no_new_privs and seccomp).
	Sandboxed bool
	// StoreDir is the store directory builders see; RealStoreDir is where
	// it is on the host (default StoreDir).
	StoreDir     storepath.Dir
	RealStoreDir string
	// Inputs are the store paths of the input closure (full paths in
	// StoreDir). Directories are bind-mounted, other files hard-linked
	// (copied when that fails) into the chroot's store.
	Inputs []string
	// Paths are the sandbox-paths (their closure must be in Inputs).
	Paths []Path
	// Outputs are the output paths the builder may create; after the build
	// each one it made is moved out of the chroot into RealStoreDir.
	Outputs []string
	// Network shares the host's network namespace (fixed-output and impure
	// derivations) and gives the build /etc/resolv.conf, /etc/services,
	// the host's /etc/hosts and an /etc/nsswitch.conf.
	Network bool
	// User is the build user; nil runs as the caller (only allowed for a
	// sandboxed build with a user namespace when not root).
	User *User
	// NoUserNamespace builds without a user namespace even where enabled.
	NoUserNamespace bool
	// KVM adds /dev/kvm when it exists (system feature kvm).
	KVM bool
	// ShmSize is the size of /dev/shm (sandbox-dev-shm-size, default "50%").
	ShmSize string
	// AllowNewPrivileges leaves no_new_privs unset (allow-new-privileges).
	AllowNewPrivileges bool
	// NoSyscallFilter skips the seccomp filter (filter-syscalls = false).
	NoSyscallFilter bool
	// Platform is the derivation's system: i686-linux, armv6l-linux and
	// armv7l-linux run with the 32-bit personality. Uname26 is
	// impersonate-linux-26.
	Platform string
	Uname26  bool
	// Log receives everything the builder writes to stdout and stderr,
	// through a pseudo-terminal in raw mode as in Nix (so builders see a
	// terminal and line-buffer their output).
	Log io.Writer
	// Timeout and MaxSilent kill the build after that long in total or
	// without output (0 = no limit).
	Timeout, MaxSilent time.Duration
}

// Result is how a build ended.
type Result struct {
	// ExitCode is the builder's exit status, -1 if killed by a signal.
	ExitCode int
	// Signal is the signal that ended the builder, if any.
	Signal os.Signal
	// TimedOut and Silent report which limit, if any, killed the build.
	TimedOut, Silent bool
	// UserNamespace reports whether the build ran in a user namespace.
	UserNamespace bool
	// Start and Stop bracket the builder's run.
	Start, Stop time.Time
}

// Success reports whether the builder exited with status 0.
func (r Result) Success() bool { return r.ExitCode == 0 && r.Signal == nil && !r.TimedOut && !r.Silent }

// ErrSetup is wrapped by errors from setting up the build environment
// (Nix's "while setting up the build environment"); the build did not run.
var ErrSetup = errors.New("while setting up the build environment")

// userNamespacesEnabled is Nix's check of max_user_namespaces.
func userNamespacesEnabled() bool {
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	return err == nil && strings.TrimSpace(string(b)) != "0"
}

func (s *Spec) validate() error {
	if s.Builder == "" {
		return errors.New("sandbox: no builder")
	}
	if s.BuildDir == "" || !path.IsAbs(s.BuildDir) {
		return fmt.Errorf("sandbox: build directory %q is not absolute", s.BuildDir)
	}
	if s.Sandboxed {
		if s.StoreDir == "" {
			return errors.New("sandbox: no store directory")
		}
		if s.Name == "" || strings.Contains(s.Name, "/") {
			return fmt.Errorf("sandbox: bad name %q", s.Name)
		}
		if s.User == nil && os.Geteuid() == 0 {
			return errors.New("refusing to run a sandboxed build as root without a build user (it would own its root-owned inputs): set 'build-users-group' (e.g. nixbld) or disable the sandbox")
		}
		for _, in := range s.Inputs {
			if _, err := s.StoreDir.Parse(in); err != nil {
				return fmt.Errorf("sandbox: input: %w", err)
			}
		}
		for _, o := range s.Outputs {
			if _, err := s.StoreDir.Parse(o); err != nil {
				return fmt.Errorf("sandbox: output: %w", err)
			}
		}
		for _, p := range s.Paths {
			if !path.IsAbs(p.Target) || path.Clean(p.Target) != p.Target || p.Target == "/" {
				return fmt.Errorf("sandbox: sandbox path target %q is not a clean absolute path", p.Target)
			}
		}
	}
	return nil
}

func (s *Spec) realStore() string {
	if s.RealStoreDir != "" {
		return s.RealStoreDir
	}
	return string(s.StoreDir)
}

func (s *Spec) sandboxBuildDir() string {
	if s.SandboxBuildDir != "" {
		return s.SandboxBuildDir
	}
	return DefaultBuildDir
}

// Run runs one build and returns how it ended. An error means the build
// could not be run (or its processes not be cleaned up); a failing
// builder is a Result with a non-zero ExitCode.
func Run(ctx context.Context, s Spec) (Result, error) {
	if err := s.validate(); err != nil {
		return Result{}, err
	}
	r := &runner{spec: &s}
	return r.run(ctx)
}
