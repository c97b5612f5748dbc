package sandbox

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal in raw mode as Nix does for a builder's
// output (so that \n is not turned into \r\n). The slave is made the
// build user's with mode 0600 when uid >= 0.
func openPTY(uid int) (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening pseudoterminal master: %w", err)
	}
	// Non-blocking, so that reads go through Go's poller and Close can
	// interrupt a read blocked by a process that keeps the slave open.
	if err := unix.SetNonblock(mfd, true); err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("opening pseudoterminal master: %w", err)
	}
	master = os.NewFile(uintptr(mfd), "/dev/ptmx")
	fail := func(what string, err error) (*os.File, *os.File, error) {
		master.Close()
		if slave != nil {
			slave.Close()
		}
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	n, err := unix.IoctlGetUint32(mfd, unix.TIOCGPTN)
	if err != nil {
		return fail("getting pseudoterminal number", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	if uid >= 0 {
		if err := os.Chmod(name, 0o600); err != nil {
			return fail("changing mode of pseudoterminal slave", err)
		}
		if err := os.Chown(name, uid, 0); err != nil {
			return fail("changing owner of pseudoterminal slave", err)
		}
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlocking pseudoterminal", err)
	}
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("opening pseudoterminal slave", err)
	}
	slave = os.NewFile(uintptr(sfd), name)
	t, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err != nil {
		return fail("getting pseudoterminal attributes", err)
	}
	// cfmakeraw
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(sfd, unix.TCSETS, t); err != nil {
		return fail("putting pseudoterminal into raw mode", err)
	}
	return master, slave, nil
}
