package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// initBinary is the program re-executed as the init step: this very
// binary (tests point it at a built silo to check cli's dispatch).
var initBinary = "/proc/self/exe"

type runner struct {
	spec   *Spec
	chroot *chrootPlan
}

// capsInUserNS are the capabilities the init step keeps (as ambient
// capabilities across its exec) inside a new user namespace to set it up.
var capsInUserNS = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH, unix.CAP_FOWNER,
	unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_NET_ADMIN, unix.CAP_SYS_CHROOT, unix.CAP_SYS_ADMIN,
}

func (r *runner) run(ctx context.Context) (res Result, err error) {
	s := r.spec
	userNS := s.Sandboxed && !s.NoUserNamespace && userNamespacesEnabled()
	if s.Sandboxed && !userNS && s.User == nil {
		return Result{}, errors.New("cannot perform a sandboxed build because user namespaces are not enabled; check /proc/sys/user/max_user_namespaces")
	}
	cmd, master, err := r.start(ctx, userNS)
	if err != nil && userNS && s.User != nil && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL)) {
		userNS = false // as Nix: retry without a user namespace
		cmd, master, err = r.start(ctx, userNS)
	}
	if r.chroot != nil {
		defer func() {
			if cerr := r.finishChroot(); cerr != nil && err == nil {
				err = cerr
			}
		}()
	}
	if err != nil {
		return Result{}, err
	}
	res.UserNamespace = userNS
	res.Start = time.Now()
	res, err = r.supervise(ctx, cmd, master, res)
	res.Stop = time.Now()
	return res, err
}

// start prepares the chroot (when sandboxed) and starts the init step,
// returning once the builder has been exec'd.
func (r *runner) start(ctx context.Context, userNS bool) (*exec.Cmd, *os.File, error) {
	s := r.spec
	if s.Sandboxed {
		if r.chroot != nil {
			if err := removeChroot(r.chroot.dir); err != nil {
				return nil, nil, err
			}
		}
		c, err := r.prepareChroot(userNS)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrSetup, err)
		}
		r.chroot = c
	}
	cfg := r.initConfig(userNS)
	ptyUID := -1
	if s.User != nil {
		ptyUID = s.User.UID
	}
	master, slave, err := openPTY(ptyUID)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	defer slave.Close()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	defer cfgR.Close()
	defer cfgW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	defer statusR.Close()
	defer statusW.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	defer devNull.Close()

	self, _ := os.Executable()
	cmd := &exec.Cmd{
		Path:       initBinary,
		Args:       []string{self, InitCommand},
		Env:        []string{},
		Stdin:      devNull,
		Stdout:     slave,
		Stderr:     slave,
		ExtraFiles: []*os.File{cfgR, statusW},
		SysProcAttr: &syscall.SysProcAttr{
			Setsid: true,
		},
	}
	if s.Sandboxed {
		flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS)
		if !s.Network {
			flags |= unix.CLONE_NEWNET
		}
		if userNS {
			flags |= unix.CLONE_NEWUSER
			hostUID, hostGID := os.Getuid(), os.Getgid()
			if s.User != nil {
				hostUID, hostGID = s.User.UID, s.User.GID
			}
			cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 1000, HostID: hostUID, Size: 1}}
			cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 100, HostID: hostGID, Size: 1}}
			// As root the init step drops its supplementary groups itself
			// (Nix's helper does setgroups(0) before cloning); an
			// unprivileged caller must deny setgroups to map its own ids.
			cmd.SysProcAttr.GidMappingsEnableSetgroups = os.Geteuid() == 0
			cmd.SysProcAttr.AmbientCaps = capsInUserNS
		}
		cmd.SysProcAttr.Cloneflags = flags
	}
	if err := cmd.Start(); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("%w: starting the sandbox: %w", ErrSetup, err)
	}
	slave.Close()
	cfgR.Close()
	statusW.Close()
	data, _ := json.Marshal(cfg)
	_, werr := cfgW.Write(data)
	cfgW.Close()
	msg, _ := io.ReadAll(io.LimitReader(statusR, 64<<10))
	if len(msg) > 0 || werr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		master.Close()
		if len(msg) == 0 {
			msg = []byte(werr.Error())
		}
		return nil, nil, fmt.Errorf("%w: %s", ErrSetup, msg)
	}
	return cmd, master, nil
}

func (r *runner) initConfig(userNS bool) *initConfig {
	s := r.spec
	c := &initConfig{
		Sandboxed: s.Sandboxed,
		UserNS:    userNS,
		Network:   s.Network,
		Builder:   s.Builder,
		Argv:      append([]string{filepath.Base(s.Builder)}, s.Args...),
		Env:       s.Env,
		Seccomp:   !s.NoSyscallFilter,
		AllowNNP:  s.AllowNewPrivileges,
		Linux32:   s.Platform == "i686-linux" && runtime.GOARCH == "amd64" || s.Platform == "armv7l-linux" || s.Platform == "armv6l-linux",
		Uname26:   s.Uname26 && (s.Platform == "i686-linux" || s.Platform == "x86_64-linux"),
		Dir:       s.BuildDir,
	}
	if c.Env == nil {
		c.Env = []string{}
	}
	root := os.Geteuid() == 0
	switch {
	case s.Sandboxed:
		c.Chroot = r.chroot.dir
		c.StoreDir = string(s.StoreDir)
		c.Mounts = r.chroot.mounts
		c.ShmSize = r.chroot.shm
		c.DevPts = r.chroot.devpts
		c.Dir = s.sandboxBuildDir()
		c.DropGroups = root
		c.SetUser = true
		c.UID, c.GID = sandboxIDs(userNS, s.User)
	case s.User != nil:
		c.SetUser = true
		c.UID, c.GID, c.Groups = s.User.UID, s.User.GID, s.User.Groups
		if c.Groups == nil {
			c.Groups = []int{}
		}
	}
	return c
}

// supervise copies the builder's output to the log until it exits, killing
// it on a timeout, silence or cancellation, and collects its status.
func (r *runner) supervise(ctx context.Context, cmd *exec.Cmd, master *os.File, res Result) (Result, error) {
	s := r.spec
	var lastOutput atomic.Int64
	lastOutput.Store(time.Now().UnixNano())
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 32<<10)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				lastOutput.Store(time.Now().UnixNano())
				if s.Log != nil {
					s.Log.Write(buf[:n])
				}
			}
			if err != nil {
				return // EIO once every holder of the slave is gone
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var kill sync.Once
	killTree := func() {
		kill.Do(func() {
			pid := cmd.Process.Pid
			unix.Kill(-pid, unix.SIGKILL) // the session/process group
			unix.Kill(pid, unix.SIGKILL)  // the builder; in a PID namespace, all of it
		})
	}
	var deadline <-chan time.Time
	if s.Timeout > 0 {
		t := time.NewTimer(s.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	var tick <-chan time.Time
	if s.MaxSilent > 0 {
		tk := time.NewTicker(min(s.MaxSilent/4+time.Millisecond, time.Second))
		defer tk.Stop()
		tick = tk.C
	}
	var waitErr error
	var ctxErr error
loop:
	for {
		select {
		case waitErr = <-exited:
			break loop
		case <-deadline:
			res.TimedOut = true
			killTree()
		case <-tick:
			if time.Since(time.Unix(0, lastOutput.Load())) >= s.MaxSilent && !res.TimedOut {
				res.Silent = true
				killTree()
			}
		case <-ctx.Done():
			ctxErr = ctx.Err()
			killTree()
		}
	}
	// The builder is gone; so must be everything it started (Nix's
	// killChild: the process group, then every process of the build user).
	killTree()
	var killErr error
	if s.User != nil {
		killErr = killUserIfAny(context.WithoutCancel(ctx), s.User.UID)
	}
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
		// A process outside the process group still holds the terminal
		// (only possible without a sandbox and without a build user).
	}
	master.Close()
	<-copied

	res.ExitCode = -1
	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		switch {
		case st.Exited():
			res.ExitCode = st.ExitStatus()
		case st.Signaled():
			res.Signal = st.Signal()
		}
	} else if waitErr != nil {
		return res, fmt.Errorf("wait for builder: %w", waitErr)
	}
	if ctxErr != nil {
		return res, ctxErr
	}
	return res, killErr
}

// finishChroot moves the outputs the builder made out of the chroot into
// the real store and deletes the chroot.
func (r *runner) finishChroot() error {
	s := r.spec
	var first error
	for _, o := range s.Outputs {
		src := r.chroot.dir + o
		if !exists(src) {
			continue
		}
		dst := filepath.Join(s.realStore(), filepath.Base(o))
		if err := os.Rename(src, dst); err != nil && first == nil {
			first = fmt.Errorf("move output %s out of the sandbox: %w", o, err)
		}
	}
	if err := removeChroot(r.chroot.dir); err != nil && first == nil {
		first = err
	}
	return first
}
