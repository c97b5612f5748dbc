package sandbox

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp filter Nix installs in every build (filter-syscalls = true),
// written here as a classic BPF program instead of through libseccomp:
//   - chmod, fchmod, fchmodat (and fchmodat2, newer than Nix 2.8) with the
//     setuid or setgid bit in the mode fail with EPERM;
//   - setxattr, lsetxattr, fsetxattr (and setxattrat) fail with ENOTSUP;
//   - everything else is allowed.
// It covers the native architecture and the compat ones Nix adds (i386
// and x32 on x86_64, arm on aarch64); a system call from any other
// architecture kills the process, as libseccomp's default does.

type sysnums struct {
	chmod, fchmod, fchmodat, fchmodat2 int // -1 = absent
	xattrs                             []int
}

type archFilter struct {
	audit uint32
	x32   bool // also match with the x32 bit (0x40000000) set
	nums  sysnums
}

func archFilters() ([]archFilter, error) {
	switch runtime.GOARCH {
	case "amd64":
		return []archFilter{
			{unix.AUDIT_ARCH_X86_64, true, sysnums{90, 91, 268, 452, []int{188, 189, 190, 463}}},
			{unix.AUDIT_ARCH_I386, false, sysnums{15, 94, 306, 452, []int{226, 227, 228, 463}}},
		}, nil
	case "arm64":
		return []archFilter{
			{unix.AUDIT_ARCH_AARCH64, false, sysnums{-1, 52, 53, 452, []int{5, 6, 7, 463}}},
			{unix.AUDIT_ARCH_ARM, false, sysnums{15, 94, 333, 452, []int{226, 227, 228, 463}}},
		}, nil
	}
	return nil, fmt.Errorf("seccomp is not supported on %s; you can bypass this error by setting the option 'filter-syscalls' to false, but note that untrusted builds can then create setuid binaries", runtime.GOARCH)
}

const (
	offNr   = 0
	offArch = 4
	offArgs = 16 // args[i] at 16 + 8*i; the low 32 bits come first (little endian)
)

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// seccompProgram builds the filter: a dispatch on the architecture, then
// one section per architecture.
func seccompProgram() ([]unix.SockFilter, error) {
	arches, err := archFilters()
	if err != nil {
		return nil, err
	}
	const (
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		enot  = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOTSUP)
		kill  = unix.SECCOMP_RET_KILL_PROCESS
	)
	var prog []unix.SockFilter
	// Per-arch sections, each: load nr, compare, and for chmods check mode.
	var sections [][]unix.SockFilter
	for _, a := range arches {
		var s []unix.SockFilter
		s = append(s, stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr))
		if a.x32 {
			s = append(s, stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, ^uint32(0x40000000)))
		}
		type modeCheck struct{ nr, arg int }
		var checks []modeCheck
		for _, c := range []modeCheck{{a.nums.chmod, 1}, {a.nums.fchmod, 1}, {a.nums.fchmodat, 2}, {a.nums.fchmodat2, 2}} {
			if c.nr >= 0 {
				checks = append(checks, c)
			}
		}
		// xattr calls: jeq nr -> ret ENOTSUP
		for _, nr := range a.nums.xattrs {
			s = append(s, jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, uint32(nr), 0, 1), stmt(unix.BPF_RET|unix.BPF_K, enot))
		}
		// mode checks: jeq nr -> load arg, jset 06000 -> EPERM, else allow
		for _, c := range checks {
			s = append(s,
				jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, uint32(c.nr), 0, 4),
				stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, uint32(offArgs+8*c.arg)),
				jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, unix.S_ISUID|unix.S_ISGID, 0, 1),
				stmt(unix.BPF_RET|unix.BPF_K, eperm),
				stmt(unix.BPF_RET|unix.BPF_K, allow),
			)
		}
		s = append(s, stmt(unix.BPF_RET|unix.BPF_K, allow))
		sections = append(sections, s)
	}
	// Dispatch on the architecture: jeq arch_i -> section i.
	prog = append(prog, stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch))
	offset := len(arches) + 1 // the jeq instructions and the kill after them
	for i, a := range arches {
		// from instruction i+1 (after the ld), jump to the section start
		skip := offset - (i + 1)
		for j := 0; j < i; j++ {
			skip += len(sections[j])
		}
		if skip > 255 {
			return nil, fmt.Errorf("seccomp program too long")
		}
		prog = append(prog, jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, a.audit, uint8(skip), 0))
	}
	prog = append(prog, stmt(unix.BPF_RET|unix.BPF_K, kill))
	for _, s := range sections {
		prog = append(prog, s...)
	}
	return prog, nil
}

// installSeccomp sets no_new_privs (unless allowNewPrivs) and loads the
// filter on the calling thread, which must be locked and then exec.
func installSeccomp(filter, allowNewPrivs bool) error {
	if !allowNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("setting no_new_privs: %w", err)
		}
	}
	if !filter {
		return nil
	}
	prog, err := seccompProgram()
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fmt.Errorf("unable to load seccomp BPF program: %w", e)
	}
	runtime.KeepAlive(prog)
	return nil
}
