package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitCommand is the hidden first argument that makes the silo binary run
// as a sandbox's init step instead of its command line: Run re-executes
// the binary with it (never running Go code in a forked child), and
// cli.Main hands such a call to Init before anything else.
const InitCommand = "__sandbox-init"

// Init runs the init step and never returns. args are the arguments after
// InitCommand: none for a build (the configuration arrives on fd 3, errors
// go to fd 4), "kill-user" for KillUser's helper.
func Init(args []string) {
	// Everything below runs on this one thread: no_new_privs, the seccomp
	// filter, the ambient capabilities and the personality are per thread
	// and must be those of the thread that calls execve.
	runtime.LockOSThread()
	if len(args) == 1 && args[0] == "kill-user" {
		if err := killAll(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	status := os.NewFile(4, "status")
	err := runInit()
	// Only reached on failure: exec replaced us otherwise.
	if status != nil {
		fmt.Fprint(status, err)
	}
	os.Exit(1)
}

// mount is one bind mount into the chroot.
type mount struct {
	Source, Target string
}

// initConfig is what Run tells the init step (JSON on fd 3).
type initConfig struct {
	Sandboxed bool
	UserNS    bool
	Network   bool
	Chroot    string
	StoreDir  string // the logical store dir, bind-mounted onto itself
	Mounts    []mount
	ShmSize   string
	DevPts    bool // mount a new devpts instance (else bind the host's)
	// Credentials to switch to before exec; SetUser false keeps the
	// current ones. Groups nil with DropGroups clears supplementary groups.
	SetUser    bool
	UID, GID   int
	Groups     []int
	DropGroups bool
	Dir        string
	Builder    string
	Argv       []string
	Env        []string
	Seccomp    bool
	AllowNNP   bool
	Linux32    bool
	Uname26    bool
}

func runInit() error {
	if _, err := unix.FcntlInt(4, unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("sandbox init: status pipe: %w", err)
	}
	cfgFile := os.NewFile(3, "config")
	data, err := io.ReadAll(io.LimitReader(cfgFile, 64<<20))
	cfgFile.Close()
	if err != nil {
		return fmt.Errorf("sandbox init: read configuration: %w", err)
	}
	var c initConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("sandbox init: configuration: %w", err)
	}
	if c.Sandboxed {
		if err := setupNamespaces(&c); err != nil {
			return err
		}
	}
	if err := installSeccomp(c.Seccomp, c.AllowNNP); err != nil {
		return err
	}
	if c.DropGroups {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups failed: %w", err)
		}
	}
	if c.SetUser {
		if c.Groups != nil {
			if err := syscall.Setgroups(c.Groups); err != nil {
				return fmt.Errorf("cannot set supplementary groups of build user: %w", err)
			}
		}
		if err := syscall.Setgid(c.GID); err != nil {
			return fmt.Errorf("setgid failed: %w", err)
		}
		if err := syscall.Setuid(c.UID); err != nil {
			return fmt.Errorf("setuid failed: %w", err)
		}
		if os.Getuid() != c.UID || os.Geteuid() != c.UID || os.Getgid() != c.GID || os.Getegid() != c.GID {
			return errors.New("setuid failed: credentials did not change")
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	if err := os.Chdir(c.Dir); err != nil {
		return fmt.Errorf("changing into '%s': %w", c.Dir, err)
	}
	setPersonality(&c)
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: unix.RLIM_INFINITY}); err != nil {
		// Nix ignores this failure too.
		_ = err
	}
	err = syscall.Exec(c.Builder, c.Argv, c.Env)
	return fmt.Errorf("executing '%s': %w", c.Builder, err)
}

const (
	perLinux32       = 0x0008
	addrNoRandomize  = 0x0040000
	uname26          = 0x0020000
	personalityQuery = 0xffffffff
)

func personality(p uintptr) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_PERSONALITY, p, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func setPersonality(c *initConfig) {
	if c.Linux32 {
		personality(perLinux32)
	}
	if c.Uname26 {
		if cur, err := personality(personalityQuery); err == nil {
			personality(uintptr(cur) | uname26)
		}
	}
	if cur, err := personality(personalityQuery); err == nil {
		personality(uintptr(cur) | addrNoRandomize)
	}
}

// setupNamespaces runs inside the new namespaces: network, host name,
// mounts, pivot_root into the chroot.
func setupNamespaces(c *initConfig) error {
	if !c.Network {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_IP)
		if err != nil {
			return fmt.Errorf("cannot open IP socket: %w", err)
		}
		ifr, err := unix.NewIfreq("lo")
		if err == nil {
			ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
			err = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("cannot set loopback interface flags: %w", err)
		}
	}
	if err := unix.Sethostname([]byte("localhost")); err != nil {
		return fmt.Errorf("cannot set host name: %w", err)
	}
	if err := unix.Setdomainname([]byte("(none)")); err != nil {
		return fmt.Errorf("cannot set domain name: %w", err)
	}
	// Mounts on a shared subtree would propagate out of our namespace.
	if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("unable to make '/' private: %w", err)
	}
	if err := unix.Mount(c.Chroot, c.Chroot, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("unable to bind mount '%s': %w", c.Chroot, err)
	}
	store := c.Chroot + c.StoreDir
	if err := unix.Mount(store, store, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("unable to bind mount the Nix store '%s': %w", store, err)
	}
	for _, m := range c.Mounts {
		if err := unix.Mount(m.Source, filepath.Join(c.Chroot, m.Target), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount from '%s' to '%s' failed: %w", m.Source, filepath.Join(c.Chroot, m.Target), err)
		}
	}
	if err := unix.Mount("none", filepath.Join(c.Chroot, "proc"), "proc", 0, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	if c.ShmSize != "" {
		if err := unix.Mount("none", filepath.Join(c.Chroot, "dev/shm"), "tmpfs", 0, "size="+c.ShmSize); err != nil {
			return fmt.Errorf("mounting /dev/shm: %w", err)
		}
	}
	if c.DevPts {
		pts := filepath.Join(c.Chroot, "dev/pts")
		err := unix.Mount("none", pts, "devpts", 0, "newinstance,mode=0620")
		switch {
		case err == nil:
			if err := os.Symlink("/dev/pts/ptmx", filepath.Join(c.Chroot, "dev/ptmx")); err != nil {
				return fmt.Errorf("creating /dev/ptmx: %w", err)
			}
			if err := os.Chmod(filepath.Join(pts, "ptmx"), 0o666); err != nil {
				return fmt.Errorf("setting permissions on /dev/pts/ptmx: %w", err)
			}
		case errors.Is(err, unix.EINVAL):
			if err := unix.Mount("/dev/pts", pts, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("bind mount from '/dev/pts' failed: %w", err)
			}
			ptmx := filepath.Join(c.Chroot, "dev/ptmx")
			if f, err := os.OpenFile(ptmx, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				f.Close()
			}
			if err := unix.Mount("/dev/ptmx", ptmx, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("bind mount from '/dev/ptmx' failed: %w", err)
			}
		default:
			return fmt.Errorf("mounting /dev/pts: %w", err)
		}
	}
	if err := os.Chdir(c.Chroot); err != nil {
		return fmt.Errorf("cannot change directory to '%s': %w", c.Chroot, err)
	}
	if err := unix.Mkdir("real-root", 0); err != nil {
		return fmt.Errorf("cannot create real-root directory: %w", err)
	}
	if err := unix.PivotRoot(".", "real-root"); err != nil {
		return fmt.Errorf("cannot pivot old root directory onto '%s': %w", filepath.Join(c.Chroot, "real-root"), err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("cannot change root directory to '%s': %w", c.Chroot, err)
	}
	if err := unix.Unmount("real-root", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("cannot unmount real root filesystem: %w", err)
	}
	if err := unix.Rmdir("real-root"); err != nil {
		return fmt.Errorf("cannot remove real-root directory: %w", err)
	}
	return nil
}
