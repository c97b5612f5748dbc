// Package nixconf reads Nix's settings as Nix 2.8 reads them: the
// directories from NIX_* variables, then nix.conf (with include and
// !include), the user's configuration files, NIX_CONFIG and the command
// line, each overriding the one before; extra-<name> appends to list
// settings.
//
// Invariants:
//   - A Settings value holds every setting Nix 2.8 knows, in the form Nix
//     prints it (`nix show-config`); names are canonical (aliases resolve).
//   - A value that does not parse is an error where a configuration file
//     or the command line sets it (Nix's UsageError) and a warning where a
//     client sends it (SetOptions); an unknown name is remembered and
//     reported, never fatal.
//   - Settings are copied, never shared, between connections: the daemon
//     keeps its own and each connection applies its client's overrides to a
//     Clone.
package nixconf

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
)

// Dirs are Nix's directories, from the environment as Nix's Settings
// constructor takes them (Debian's nix-bin defaults otherwise).
type Dirs struct {
	Store   string // NIX_STORE_DIR, else NIX_STORE, else /nix/store
	Data    string // NIX_DATA_DIR
	Log     string // NIX_LOG_DIR
	State   string // NIX_STATE_DIR
	Conf    string // NIX_CONF_DIR
	Libexec string // NIX_LIBEXEC_DIR
	Bin     string // NIX_BIN_DIR
	Socket  string // NIX_DAEMON_SOCKET_PATH, else <State>/daemon-socket/socket
	// UserConfFiles are the user's configuration files, highest priority
	// first: NIX_USER_CONF_FILES, else $XDG_CONFIG_HOME/nix/nix.conf and
	// each of $XDG_CONFIG_DIRS/nix/nix.conf.
	UserConfFiles []string

	getenv func(string) (string, bool)
}

// Compiled-in defaults of Debian's nix-bin 2.8.
const (
	DefaultStoreDir   = "/nix/store"
	DefaultDataDir    = "/usr/share"
	DefaultLogDir     = "/nix/var/log/nix"
	DefaultStateDir   = "/nix/var/nix"
	DefaultConfDir    = "/etc/nix"
	DefaultLibexecDir = "/usr/libexec"
	DefaultBinDir     = "/usr/bin"
)

// Version is the Nix version silo's daemon speaks for.
const Version = "2.8.0"

// LookupEnv is the environment as os.LookupEnv sees it.
type LookupEnv func(string) (string, bool)

// NewDirs reads the directories from env (nil means the process's).
func NewDirs(env LookupEnv) (*Dirs, error) {
	if env == nil {
		env = os.LookupEnv
	}
	d := &Dirs{getenv: env}
	var err error
	pick := func(dst *string, dflt string, vars ...string) {
		v := dflt
		for _, name := range vars {
			if s, ok := env(name); ok {
				v = s
				break
			}
		}
		if err == nil {
			var e error
			if *dst, e = canonPath(v); e != nil {
				err = fmt.Errorf("%s: %w", vars[0], e)
			}
		}
	}
	pick(&d.Store, DefaultStoreDir, "NIX_STORE_DIR", "NIX_STORE")
	pick(&d.Data, DefaultDataDir, "NIX_DATA_DIR")
	pick(&d.Log, DefaultLogDir, "NIX_LOG_DIR")
	pick(&d.State, DefaultStateDir, "NIX_STATE_DIR")
	pick(&d.Conf, DefaultConfDir, "NIX_CONF_DIR")
	pick(&d.Libexec, DefaultLibexecDir, "NIX_LIBEXEC_DIR")
	pick(&d.Bin, DefaultBinDir, "NIX_BIN_DIR")
	pick(&d.Socket, d.State+"/daemon-socket/socket", "NIX_DAEMON_SOCKET_PATH")
	if err != nil {
		return nil, err
	}
	d.UserConfFiles = d.userConfFiles()
	return d, nil
}

func (d *Dirs) lookup(name string) (string, bool) {
	if d == nil || d.getenv == nil {
		return os.LookupEnv(name)
	}
	return d.getenv(name)
}

func (d *Dirs) env(name string) string {
	v, _ := d.lookup(name)
	return v
}

func (d *Dirs) userConfFiles() []string {
	if v, ok := d.lookup("NIX_USER_CONF_FILES"); ok {
		return strings.FieldsFunc(v, func(r rune) bool { return r == ':' })
	}
	home, ok := d.lookup("XDG_CONFIG_HOME")
	if !ok {
		home = d.home() + "/.config"
	}
	dirs := []string{home}
	xdg, ok := d.lookup("XDG_CONFIG_DIRS")
	if !ok {
		xdg = "/etc/xdg"
	}
	dirs = append(dirs, strings.FieldsFunc(xdg, func(r rune) bool { return r == ':' })...)
	files := make([]string, len(dirs))
	for i, dir := range dirs {
		files[i] = dir + "/nix/nix.conf"
	}
	return files
}

func (d *Dirs) home() string {
	if h, ok := d.lookup("HOME"); ok {
		return h
	}
	if u, err := user.Current(); err == nil {
		return u.HomeDir
	}
	return ""
}

func (d *Dirs) defaultBuilders() string {
	if v, ok := d.lookup("NIX_REMOTE_SYSTEMS"); ok {
		var ss []string
		for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' }) {
			ss = append(ss, "@"+p)
		}
		return strings.Join(ss, " ")
	}
	return "@" + d.Conf + "/machines"
}

// canonPath is Nix's canonPath without resolving symlinks: an absolute
// path with ".", ".." and repeated slashes removed.
func canonPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("not an absolute path: '%s'", p)
	}
	return filepath.Clean(p), nil
}

// Config is the daemon's configuration: its directories and settings.
type Config struct {
	Dirs     *Dirs
	Settings *Settings
}

// Load reads the configuration as Nix's loadConfFile: <Conf>/nix.conf,
// then the user's files (lowest priority first), then NIX_CONFIG.
// Command-line settings are applied by the caller afterwards, with Set.
func Load(env LookupEnv) (*Config, error) {
	dirs, err := NewDirs(env)
	if err != nil {
		return nil, err
	}
	s := Defaults(dirs)
	if err := s.ApplyFile(dirs.Conf + "/nix.conf"); err != nil {
		return nil, err
	}
	for i := len(dirs.UserConfFiles) - 1; i >= 0; i-- {
		if err := s.ApplyFile(dirs.UserConfFiles[i]); err != nil {
			return nil, err
		}
	}
	if v, ok := dirs.lookup("NIX_CONFIG"); ok {
		if err := s.Apply(v, "NIX_CONFIG"); err != nil {
			return nil, err
		}
	}
	return &Config{Dirs: dirs, Settings: s}, nil
}

// UsageError is a setting that cannot be applied as written, with Nix's
// message.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// IsUsage reports whether err is a UsageError.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}
