package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// chrootPlan is the chroot of one build as prepared on the host.
type chrootPlan struct {
	dir    string
	mounts []mount // in Nix's order (sorted by target)
	shm    string
	devpts bool
}

type bindSource struct {
	source   string
	optional bool
}

// sandboxIDs are the uid and gid the builder has inside the sandbox.
func sandboxIDs(userNS bool, u *User) (int, int) {
	if userNS {
		return 1000, 100
	}
	return u.UID, u.GID
}

// prepareChroot builds <realStore>/<name>.chroot as Nix's startBuilder
// does: /tmp, /etc files, the fake store with the inputs, /dev, and the
// list of bind mounts the init step makes.
func (r *runner) prepareChroot(userNS bool) (*chrootPlan, error) {
	s := r.spec
	c := &chrootPlan{dir: filepath.Join(s.realStore(), s.Name+".chroot")}
	if err := removeChroot(c.dir); err != nil {
		return nil, err
	}
	gid := -1
	if s.User != nil {
		gid = s.User.GID
	}
	mkdir := func(p string, mode os.FileMode, chownGroup bool) error {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("cannot create '%s': %w", p, err)
		}
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("setting permissions on '%s': %w", p, err)
		}
		if chownGroup && gid >= 0 {
			if err := os.Chown(p, 0, gid); err != nil {
				return fmt.Errorf("cannot change ownership of '%s': %w", p, err)
			}
		}
		return nil
	}
	write := func(name, content string) error {
		p := filepath.Join(c.dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		return nil
	}
	if err := os.Mkdir(c.dir, 0o750); err != nil {
		return nil, fmt.Errorf("cannot create '%s': %w", c.dir, err)
	}
	if err := mkdir(c.dir, 0o750, true); err != nil {
		return nil, err
	}
	if err := mkdir(filepath.Join(c.dir, "tmp"), 0o777|os.ModeSticky, false); err != nil {
		return nil, err
	}
	if err := mkdir(filepath.Join(c.dir, "etc"), 0o755, false); err != nil {
		return nil, err
	}
	uid, sgid := sandboxIDs(userNS, s.User)
	if err := write("etc/group", fmt.Sprintf("root:x:0:\nnixbld:!:%d:\nnogroup:x:65534:\n", sgid)); err != nil {
		return nil, err
	}
	if !s.Network {
		if err := write("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"); err != nil {
			return nil, err
		}
	}
	if err := write("etc/passwd", fmt.Sprintf("root:x:0:0:Nix build user:%[3]s:/noshell\nnixbld:x:%[1]d:%[2]d:Nix build user:%[3]s:/noshell\nnobody:x:65534:65534:Nobody:/:/noshell\n",
		uid, sgid, s.sandboxBuildDir())); err != nil {
		return nil, err
	}
	store := c.dir + string(s.StoreDir)
	if err := mkdir(store, 0o775|os.ModeSticky, true); err != nil {
		return nil, err
	}

	dirs := map[string]bindSource{}
	for _, p := range s.Paths {
		dirs[p.Target] = bindSource{p.Source, p.Optional}
	}
	dirs[s.sandboxBuildDir()] = bindSource{source: s.BuildDir}
	for _, in := range s.Inputs {
		real := filepath.Join(s.realStore(), filepath.Base(in))
		st, err := os.Lstat(real)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", in, err)
		}
		if st.IsDir() {
			dirs[in] = bindSource{source: real}
		} else if err := linkOrCopy(real, c.dir+in); err != nil {
			return nil, err
		}
	}
	for _, o := range s.Outputs {
		delete(dirs, o)
	}
	if _, ok := dirs["/dev"]; !ok {
		for _, d := range []string{"dev/shm", "dev/pts"} {
			if err := mkdir(filepath.Join(c.dir, d), 0o755, false); err != nil {
				return nil, err
			}
		}
		devs := []string{"/dev/full"}
		if s.KVM && exists("/dev/kvm") {
			devs = append(devs, "/dev/kvm")
		}
		devs = append(devs, "/dev/null", "/dev/random", "/dev/tty", "/dev/urandom", "/dev/zero")
		for _, d := range devs {
			if _, ok := dirs[d]; !ok {
				dirs[d] = bindSource{source: d}
			}
		}
		for link, target := range map[string]string{"dev/fd": "/proc/self/fd", "dev/stdin": "/proc/self/fd/0", "dev/stdout": "/proc/self/fd/1", "dev/stderr": "/proc/self/fd/2"} {
			if err := os.Symlink(target, filepath.Join(c.dir, link)); err != nil {
				return nil, fmt.Errorf("create /%s: %w", link, err)
			}
		}
	}
	if s.Network {
		if err := write("etc/nsswitch.conf", "hosts: files dns\nservices: files\n"); err != nil {
			return nil, err
		}
		for _, p := range []string{"/etc/resolv.conf", "/etc/services", "/etc/hosts"} {
			if _, ok := dirs[p]; !ok && exists(p) {
				dirs[p] = bindSource{source: p}
			}
		}
	}
	targets := make([]string, 0, len(dirs))
	for t := range dirs {
		targets = append(targets, t)
	}
	slices.Sort(targets)
	for _, t := range targets {
		b := dirs[t]
		if b.source == "/proc" {
			continue // backwards compatibility, as in Nix
		}
		st, err := os.Stat(b.source)
		if err != nil {
			if b.optional && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("getting attributes of path '%s': %w", b.source, err)
		}
		target := filepath.Join(c.dir, t)
		if st.IsDir() {
			err = os.MkdirAll(target, 0o755)
		} else if err = os.MkdirAll(filepath.Dir(target), 0o755); err == nil {
			err = os.WriteFile(target, nil, 0o644)
		}
		if err != nil {
			return nil, fmt.Errorf("create mount point %s: %w", target, err)
		}
		c.mounts = append(c.mounts, mount{Source: b.source, Target: t})
	}
	if err := mkdir(filepath.Join(c.dir, "proc"), 0o755, false); err != nil {
		return nil, err
	}
	if exists("/dev/shm") && exists(filepath.Join(c.dir, "dev/shm")) {
		c.shm = s.ShmSize
		if c.shm == "" {
			c.shm = "50%"
		}
	}
	_, devBound := dirs["/dev"]
	_, ptsBound := dirs["/dev/pts"]
	_, ptmxBound := dirs["/dev/ptmx"]
	c.devpts = exists("/dev/pts/ptmx") && !devBound && !ptsBound && !ptmxBound
	return c, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// linkOrCopy hard-links a non-directory input into the chroot, copying it
// when the link count is exhausted or links are not permitted (Nix's).
func linkOrCopy(from, to string) error {
	err := os.Link(from, to)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EMLINK) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("linking '%s' to '%s': %w", to, from, err)
	}
	st, err := os.Lstat(from)
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(from)
		if err != nil {
			return err
		}
		return os.Symlink(target, to)
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return out.Close()
}

// removeChroot deletes a chroot directory, refusing if anything is
// mounted under it (deleting through a bind mount would delete inputs).
func removeChroot(dir string) error {
	if !exists(dir) {
		return nil
	}
	mounted, err := mountedUnder(dir)
	if err != nil {
		return err
	}
	if mounted != "" {
		return fmt.Errorf("refusing to delete %s: %s is still mounted", dir, mounted)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("delete %s: %w", dir, err)
	}
	return nil
}

func mountedUnder(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			return mp, nil
		}
	}
	return "", sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
