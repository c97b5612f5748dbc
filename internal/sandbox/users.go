package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// User is a build user taken from the pool, held until Release.
type User struct {
	Name   string
	UID    int
	GID    int   // the build-users-group's gid, as Nix uses
	Groups []int // supplementary groups (getgrouplist of the user)
	lock   *os.File
	pool   *Pool
}

// Pool hands out the members of the build-users-group as Nix's UserLock
// does: the first member whose lock file <state>/userpool/<uid> can be
// locked (flock, exclusive) is free, so silo and a real nix-daemon sharing
// the state directory never build as the same user at once.
type Pool struct {
	// Group is the build-users-group.
	Group string
	// StateDir is Nix's state directory (/nix/var/nix).
	StateDir string
	// GroupFile and PasswdFile default to /etc/group and /etc/passwd.
	GroupFile, PasswdFile string
	// Poll is how often Acquire retries while every user is busy in
	// another process (default 1s); releases in this process wake it at once.
	Poll time.Duration

	mu      sync.Mutex
	release chan struct{} // closed and replaced on every Release
}

// ErrNoFreeUser is returned by TryAcquire when every build user is busy.
var ErrNoFreeUser = errors.New("all build users are currently in use")

// Acquire returns a free build user, waiting (calling waiting once, so the
// caller can say "waiting for UID to build ...") while all are in use.
// Every process already running as the user is killed first.
func (p *Pool) Acquire(ctx context.Context, waiting func()) (*User, error) {
	for {
		p.mu.Lock()
		if p.release == nil {
			p.release = make(chan struct{})
		}
		wake := p.release
		p.mu.Unlock()
		u, err := p.TryAcquire(ctx)
		if !errors.Is(err, ErrNoFreeUser) {
			return u, err
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		poll := p.Poll
		if poll <= 0 {
			poll = time.Second
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// TryAcquire is Acquire without waiting: ErrNoFreeUser if none is free.
func (p *Pool) TryAcquire(ctx context.Context) (*User, error) {
	gr, err := lookupGroup(p.groupFile(), p.Group)
	if err != nil {
		return nil, err
	}
	if len(gr.members) == 0 {
		return nil, fmt.Errorf("the build users group '%s' has no members", p.Group)
	}
	dir := filepath.Join(p.StateDir, "userpool")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	for _, name := range gr.members {
		pw, err := lookupUser(p.passwdFile(), name)
		if err != nil {
			return nil, fmt.Errorf("the user '%s' in the group '%s' does not exist", name, p.Group)
		}
		fn := filepath.Join(dir, strconv.Itoa(pw.uid))
		f, err := os.OpenFile(fn, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening user lock '%s': %w", fn, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				continue
			}
			return nil, fmt.Errorf("locking '%s': %w", fn, err)
		}
		if pw.uid == os.Getuid() || pw.uid == os.Geteuid() {
			f.Close()
			return nil, fmt.Errorf("the Nix user should not be a member of '%s'", p.Group)
		}
		groups, err := groupList(p.groupFile(), name, pw.gid)
		if err != nil {
			f.Close()
			return nil, err
		}
		u := &User{Name: name, UID: pw.uid, GID: gr.gid, Groups: groups, lock: f, pool: p}
		if err := killUserIfAny(ctx, u.UID); err != nil {
			u.Release()
			return nil, err
		}
		return u, nil
	}
	return nil, ErrNoFreeUser
}

// Release unlocks the user for other builds.
func (u *User) Release() error {
	if u == nil || u.lock == nil {
		return nil
	}
	err := u.lock.Close()
	u.lock = nil
	if p := u.pool; p != nil {
		p.mu.Lock()
		if p.release != nil {
			close(p.release)
			p.release = nil
		}
		p.mu.Unlock()
	}
	return err
}

func (p *Pool) groupFile() string {
	if p.GroupFile != "" {
		return p.GroupFile
	}
	return "/etc/group"
}

func (p *Pool) passwdFile() string {
	if p.PasswdFile != "" {
		return p.PasswdFile
	}
	return "/etc/passwd"
}

type groupEntry struct {
	name    string
	gid     int
	members []string
}

type passwdEntry struct {
	uid, gid int
}

// Only the files database is consulted (no NSS modules such as LDAP).
func readColon(file string, fields int, each func([]string) bool) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) < fields {
			continue
		}
		if !each(parts) {
			return nil
		}
	}
	return sc.Err()
}

func lookupGroup(file, name string) (*groupEntry, error) {
	var found *groupEntry
	err := readColon(file, 4, func(f []string) bool {
		if f[0] != name {
			return true
		}
		gid, err := strconv.Atoi(f[2])
		if err != nil {
			return true
		}
		g := &groupEntry{name: f[0], gid: gid}
		for _, m := range strings.Split(f[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				g.members = append(g.members, m)
			}
		}
		found = g
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if found == nil {
		return nil, fmt.Errorf("the group '%s' specified in 'build-users-group' does not exist", name)
	}
	return found, nil
}

func lookupUser(file, name string) (*passwdEntry, error) {
	var found *passwdEntry
	err := readColon(file, 7, func(f []string) bool {
		if f[0] != name {
			return true
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 == nil && err2 == nil {
			found = &passwdEntry{uid: uid, gid: gid}
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("no user %q", name)
	}
	return found, nil
}

// groupList is getgrouplist(name, gid): gid first, then every group
// listing name as a member. Nix allows at most 10.
func groupList(file, name string, gid int) ([]int, error) {
	out := []int{gid}
	err := readColon(file, 4, func(f []string) bool {
		g, err := strconv.Atoi(f[2])
		if err != nil {
			return true
		}
		for _, m := range strings.Split(f[3], ",") {
			if strings.TrimSpace(m) == name {
				dup := false
				for _, o := range out {
					dup = dup || o == g
				}
				if !dup {
					out = append(out, g)
				}
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(out) > 10 {
		return nil, fmt.Errorf("failed to get list of supplementary groups for '%s'", name)
	}
	return out, nil
}

// KillUser kills every process running as uid, as Nix's killUser: a helper
// switched to uid sends SIGKILL to -1 (everything it may signal) until
// nothing is left. The helper is the silo binary itself (see Init).
func KillUser(ctx context.Context, uid int) error {
	if uid <= 0 {
		return fmt.Errorf("refusing to kill all processes of uid %d", uid)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, initBinary, InitCommand, "kill-user")
	cmd.Args[0] = self
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: 65534, NoSetGroups: false}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cannot kill processes for uid '%d': %v: %s", uid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// hasProcesses reports whether a process (not a zombie) runs as uid, by
// reading /proc/<pid>/status (whose Uid line, unlike the directory's
// owner, a process cannot hide by making itself non-dumpable).
func hasProcesses(uid int) bool {
	d, err := os.Open("/proc")
	if err != nil {
		return true // cannot tell: assume so
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return true
	}
	want := []byte("\nUid:\t" + strconv.Itoa(uid) + "\t")
	buf := make([]byte, 4096)
	for _, n := range names {
		if n[0] < '0' || n[0] > '9' {
			continue
		}
		fd, err := unix.Open("/proc/"+n+"/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // gone
		}
		m, _ := unix.Read(fd, buf)
		unix.Close(fd)
		if m <= 0 {
			continue
		}
		st := buf[:m]
		if i := bytes.Index(st, want); i >= 0 && !bytes.Contains(st, []byte("\nState:\tZ")) && !bytes.Contains(st, []byte("\nState:\tX")) {
			return true
		}
	}
	return false
}

// killUserIfAny is KillUser when a process of uid exists.
func killUserIfAny(ctx context.Context, uid int) error {
	if !hasProcesses(uid) {
		return nil
	}
	return KillUser(ctx, uid)
}

// killAll is the helper's side of KillUser.
func killAll() error {
	if os.Getuid() == 0 {
		return errors.New("refusing to kill all processes as root")
	}
	for {
		err := unix.Kill(-1, unix.SIGKILL)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EPERM):
			return nil // no more processes
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return fmt.Errorf("cannot kill processes for uid '%d': %w", os.Getuid(), err)
		}
	}
}
