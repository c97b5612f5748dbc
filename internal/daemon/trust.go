package daemon

import (
	"fmt"
	"net"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Peer is who is on the other end of a connection.
type Peer struct {
	PID, UID, GID int // -1 if unknown
	User          string
	Group         string // the peer's primary group, by its gid
	// Trusted clients may change any setting, import unsigned paths,
	// repair, add signatures and build logs (trusted-users).
	Trusted bool
}

// peerOf reads a unix socket peer's credentials (SO_PEERCRED) and names.
func peerOf(c *net.UnixConn) (*Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("getting peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("getting peer credentials: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("getting peer credentials: %w", serr)
	}
	p := &Peer{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)}
	p.User = strconv.Itoa(p.UID)
	if u, err := user.LookupId(p.User); err == nil {
		p.User = u.Username
	}
	p.Group = strconv.Itoa(p.GID)
	if g, err := user.LookupGroupId(p.Group); err == nil {
		p.Group = g.Name
	}
	return p, nil
}

// matchUser reports whether user (with primary group group) is in list,
// as Nix's matchUser: "*", the user's name, or "@group" naming the
// primary group or a group the user is a member of.
func matchUser(usr, group string, list []string) bool {
	if slices.Contains(list, "*") || slices.Contains(list, usr) {
		return true
	}
	var member []string // the user's groups, looked up once
	looked := false
	for _, e := range list {
		g, ok := strings.CutPrefix(e, "@")
		if !ok {
			continue
		}
		if g == group {
			return true
		}
		if !looked {
			looked = true
			member = groupsOf(usr)
		}
		if slices.Contains(member, g) {
			return true
		}
	}
	return false
}

// groupsOf returns the names of the groups usr is a member of (getgrouplist).
func groupsOf(usr string) []string {
	u, err := user.Lookup(usr)
	if err != nil {
		return nil
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var names []string
	for _, gid := range gids {
		if g, err := user.LookupGroupId(gid); err == nil {
			names = append(names, g.Name)
		}
	}
	return names
}

// authorize decides a peer's trust as Nix's daemon loop: trusted if in
// trusted-users; refused if neither trusted nor in allowed-users, or if
// its primary group is the build users group.
func authorize(p *Peer, trustedUsers, allowedUsers []string, buildUsersGroup string) error {
	p.Trusted = matchUser(p.User, p.Group, trustedUsers)
	if (!p.Trusted && !matchUser(p.User, p.Group, allowedUsers)) || (buildUsersGroup != "" && p.Group == buildUsersGroup) {
		return fmt.Errorf("user '%s' is not allowed to connect to the Nix daemon", p.User)
	}
	return nil
}
