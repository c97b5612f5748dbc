package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode"

	"github.com/silo-cache/silo/internal/daemon"
	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/worker"
)

func init() {
	personalities["nix-daemon"] = nixDaemonMain
	Register(&Command{
		Name:  "daemon",
		Short: "serve the Nix store to Nix clients, as nix-daemon (worker protocol 1.34)",
		Long: `Serves Nix's worker protocol on the daemon socket (NIX_DAEMON_SOCKET_PATH, default
<state>/daemon-socket/socket; or the socket systemd passes), over Nix's own on-disk
store: the Nix 2.8 client cannot tell it from nix-daemon. Each connection is served
concurrently with its own settings and temp roots.

Settings are Nix's: NIX_STORE_DIR, NIX_STATE_DIR, NIX_LOG_DIR, NIX_CONF_DIR, nix.conf
(trusted-users, allowed-users, require-sigs, ...), the user's nix.conf files and
NIX_CONFIG, then --option. Installed or linked as 'nix-daemon', silo accepts
nix-daemon's own command line (--daemon, --stdio, --option NAME VALUE, --NAME VALUE,
-v, --debug, --store, --version).

Substitutes from binary caches as nix-daemon does (substituters, trusted-public-keys,
require-sigs, trusted-substituters, netrc-file, narinfo-cache-*-ttl; http(s) and
file:// caches, silo's included): before building, for QueryMissing, nix-env -qas.
Not yet: building derivations (build ops answer an error saying so).`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			stdio := fs.Bool("stdio", false, "serve one connection on stdin/stdout (what ssh-ng:// runs), trusting it")
			store := fs.String("store", "", "the store to serve: auto, local, a directory (a chroot store) or local?root=DIR; with --stdio also daemon or unix://PATH to relay to")
			var options StringList
			fs.Var(&options, "option", "set a Nix setting, `NAME=VALUE` (repeatable; overrides nix.conf)")
			debug := fs.Bool("debug", false, "log at Nix's debug level")
			quiet := fs.Bool("quiet", false, "log only warnings and errors")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) > 0 {
					return Usagef("daemon: unexpected argument %q", args[0])
				}
				cfg, err := nixconf.Load(lookupEnv(env))
				if err != nil {
					return err
				}
				for _, o := range options {
					name, value, ok := strings.Cut(o, "=")
					if !ok {
						return Usagef("daemon: --option %q: want NAME=VALUE", o)
					}
					if _, err := cfg.Settings.Set(strings.TrimSpace(name), strings.TrimSpace(value)); err != nil {
						return Usagef("daemon: --option %s: %v", o, err)
					}
				}
				if *store != "" {
					cfg.Settings.Set("store", *store)
				}
				verbosity := worker.LvlInfo
				if *debug {
					verbosity = worker.LvlDebug
				} else if *quiet {
					verbosity = worker.LvlWarn
				}
				return runDaemon(ctx, env, cfg, verbosity, *stdio)
			}
		},
	})
}

// lookupEnv adapts env for nixconf.
func lookupEnv(env *Env) nixconf.LookupEnv {
	if env.LookupEnv != nil {
		return env.LookupEnv
	}
	return func(k string) (string, bool) {
		v := env.Getenv(k)
		return v, v != ""
	}
}

// runDaemon serves the store until ctx ends: on the daemon socket, or on
// stdin/stdout with stdio.
func runDaemon(ctx context.Context, env *Env, cfg *nixconf.Config, verbosity uint64, stdio bool) error {
	for _, name := range cfg.Settings.Unknown() {
		if verbosity >= worker.LvlWarn {
			fmt.Fprintf(env.Stderr, "warning: unknown setting '%s'\n", name)
		}
	}
	uri, err := daemon.ParseStoreURI(cfg.Settings.String("store"), cfg.Dirs, !stdio)
	if err != nil {
		return err
	}
	srv := daemon.New(daemon.Options{Config: cfg, Store: uri, Verbosity: verbosity, Stderr: env.Stderr})
	if stdio {
		in, ok1 := env.Stdin.(*os.File)
		out, ok2 := env.Stdout.(*os.File)
		if !ok1 || !ok2 {
			return errors.New("--stdio needs the process's own stdin and stdout")
		}
		return srv.ServeStdio(ctx, in, out)
	}
	if uri.Socket != "" {
		return fmt.Errorf("the store %s is another daemon; silo daemon relays to one only with --stdio (set store = local)", uri.URI)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("cannot change current directory: %w", err)
	}
	l, err := daemon.Listen(cfg.Dirs.Socket, env.Getenv)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, l)
}

// nixDaemonMain is silo installed as nix-daemon: nix-daemon 2.8's command
// line and messages.
func nixDaemonMain(ctx context.Context, args []string, env *Env) int {
	fail := func(err error) int {
		msg := err.Error()
		fmt.Fprintf(env.Stderr, "error: %s\n", msg)
		var u *nixUsage
		if errors.As(err, &u) {
			fmt.Fprintln(env.Stderr, "Try 'nix-daemon --help' for more information.")
		}
		return 1
	}
	cfg, err := nixconf.Load(lookupEnv(env))
	if err != nil {
		return fail(err)
	}
	cfg.Settings.Warn = func(m string) { fmt.Fprintf(env.Stderr, "warning: %s\n", m) }
	p := &nixDaemonArgs{cfg: cfg, env: env, verbosity: worker.LvlInfo}
	done, err := p.parse(args)
	if err != nil {
		return fail(err)
	}
	if done {
		return 0
	}
	if err := runDaemon(ctx, env, cfg, p.verbosity, p.stdio); err != nil {
		return fail(err)
	}
	return 0
}

// nixUsage is a command-line error, followed by Nix's "Try ... --help" hint.
type nixUsage struct{ msg string }

func (e *nixUsage) Error() string { return e.msg }

func nixUsagef(format string, a ...any) error { return &nixUsage{fmt.Sprintf(format, a...)} }

type nixDaemonArgs struct {
	cfg       *nixconf.Config
	env       *Env
	verbosity uint64
	stdio     bool
}

// parse applies nix-daemon's arguments in order, as Nix's LegacyArgs (with
// MixCommonArgs and a flag per setting). It reports done for --help and
// --version, which exit at once.
func (p *nixDaemonArgs) parse(args []string) (done bool, err error) {
	// "-vvK" is "-v -v -K".
	var expanded []string
	for _, a := range args {
		if len(a) > 2 && a[0] == '-' && a[1] != '-' && unicode.IsLetter(rune(a[1])) {
			for _, r := range a[1:] {
				expanded = append(expanded, "-"+string(r))
			}
			continue
		}
		expanded = append(expanded, a)
	}
	args = expanded
	s := p.cfg.Settings
	for i := 0; i < len(args); i++ {
		a := args[i]
		need := func(n int) ([]string, error) {
			if i+n >= len(args) {
				return nil, nixUsagef("flag '%s' requires %d argument(s)", a, n)
			}
			vals := args[i+1 : i+1+n]
			i += n
			return vals, nil
		}
		set := func(name, value string) error {
			if _, err := s.Set(name, value); err != nil {
				return err
			}
			return nil
		}
		switch a {
		case "--daemon": // ignored, as in Nix
		case "--help":
			fmt.Fprint(p.env.Stdout, nixDaemonHelp)
			return true, nil
		case "--version":
			p.printVersion()
			return true, nil
		case "--stdio":
			p.stdio = true
		case "-v", "--verbose":
			p.verbosity++
		case "--quiet":
			if p.verbosity > worker.LvlError {
				p.verbosity--
			}
		case "--debug":
			p.verbosity = worker.LvlDebug
		case "-Q", "--no-build-output", "--readonly-mode", "--no-gc-warning":
		case "-K", "--keep-failed":
			set("keep-failed", "true")
		case "-k", "--keep-going":
			set("keep-going", "true")
		case "--fallback":
			set("fallback", "true")
		case "--option":
			v, err := need(2)
			if err != nil {
				return false, err
			}
			if _, err := s.Set(v[0], v[1]); err != nil {
				fmt.Fprintf(p.env.Stderr, "warning: error: %v\n", err)
			}
		case "--log-format":
			if _, err := need(1); err != nil {
				return false, err
			}
		case "-j", "--max-jobs":
			v, err := need(1)
			if err != nil {
				return false, err
			}
			if err := set("max-jobs", v[0]); err != nil {
				return false, err
			}
		case "--cores", "--max-silent-time", "--timeout":
			v, err := need(1)
			if err != nil {
				return false, err
			}
			n, err := unitInt(v[0])
			if err != nil {
				return false, err
			}
			if err := set(a[2:], n); err != nil {
				return false, err
			}
		case "--store":
			v, err := need(1)
			if err != nil {
				return false, err
			}
			set("store", v[0])
		default:
			if !strings.HasPrefix(a, "-") || a == "-" {
				return false, nixUsagef("unexpected argument '%s'", a)
			}
			ok, err := p.settingFlag(a, need)
			if err != nil {
				return false, err
			}
			if !ok {
				return false, nixUsagef("unrecognised flag '%s'", a)
			}
		}
	}
	return false, nil
}

// settingFlag applies --NAME VALUE, --extra-NAME VALUE, or for a boolean
// setting --NAME / --no-NAME (and --relaxed-sandbox), as Nix's
// convertToArgs. Aliases have no flags.
func (p *nixDaemonArgs) settingFlag(a string, need func(int) ([]string, error)) (bool, error) {
	name, ok := strings.CutPrefix(a, "--")
	if !ok {
		return false, nil
	}
	s := p.cfg.Settings
	canonical := func(n string) (nixconf.Kind, bool) {
		c, kind, ok := nixconf.Lookup(n)
		return kind, ok && c == n
	}
	if kind, ok := canonical(name); ok {
		switch kind {
		case nixconf.KindBool:
			_, err := s.Set(name, "true")
			return true, err
		case nixconf.KindSandbox:
			_, err := s.Set(name, "true")
			return true, err
		}
		v, err := need(1)
		if err != nil {
			return true, err
		}
		_, err = s.Set(name, v[0])
		return true, err
	}
	for prefix, value := range map[string]string{"no-": "false", "relaxed-": "relaxed"} {
		if n, ok := strings.CutPrefix(name, prefix); ok {
			if kind, ok := canonical(n); ok && (kind == nixconf.KindBool && prefix == "no-" || kind == nixconf.KindSandbox) {
				_, err := s.Set(n, value)
				return true, err
			}
		}
	}
	if n, ok := strings.CutPrefix(name, "extra-"); ok {
		if kind, ok := canonical(n); ok && kind.Appendable() {
			v, err := need(1)
			if err != nil {
				return true, err
			}
			_, err = s.Set(name, v[0])
			return true, err
		}
	}
	return false, nil
}

// unitInt parses an integer with an optional binary unit suffix (K, M, G,
// T), as Nix's string2IntWithUnitPrefix.
func unitInt(s string) (string, error) {
	mult := uint64(1)
	if s != "" {
		u := unicode.ToUpper(rune(s[len(s)-1]))
		if unicode.IsLetter(u) {
			switch u {
			case 'K':
				mult = 1 << 10
			case 'M':
				mult = 1 << 20
			case 'G':
				mult = 1 << 30
			case 'T':
				mult = 1 << 40
			default:
				return "", nixUsagef("invalid unit specifier '%c'", u)
			}
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strings.HasPrefix(s, "-") {
		return "", nixUsagef("'%s' is not an integer", s)
	}
	return strconv.FormatUint(n*mult, 10), nil
}

func (p *nixDaemonArgs) printVersion() {
	w := p.env.Stdout
	fmt.Fprintf(w, "nix-daemon (Nix) %s\n", nixconf.Version)
	if p.verbosity > worker.LvlInfo {
		d, s := p.cfg.Dirs, p.cfg.Settings
		fmt.Fprintf(w, "System type: %s\n", s.String("system"))
		fmt.Fprintf(w, "Additional system types: %s\n", strings.Join(s.List("extra-platforms"), ", "))
		fmt.Fprintf(w, "Features: gc, signed-caches\n")
		fmt.Fprintf(w, "System configuration file: %s/nix.conf\n", d.Conf)
		fmt.Fprintf(w, "User configuration files: %s\n", strings.Join(d.UserConfFiles, ":"))
		fmt.Fprintf(w, "Store directory: %s\n", d.Store)
		fmt.Fprintf(w, "State directory: %s\n", d.State)
	}
}

const nixDaemonHelp = `Usage: nix-daemon [--daemon | --stdio] [options]

silo acting as nix-daemon (Nix 2.8.0, worker protocol 1.34): serves the Nix
store to Nix clients on the daemon socket (NIX_DAEMON_SOCKET_PATH, default
<state>/daemon-socket/socket, or the socket passed by systemd).

  --daemon               ignored (backwards compatibility)
  --stdio                serve one trusted connection on stdin/stdout
  --store URI            the store to serve (auto, local, DIR, local?root=DIR;
                         with --stdio also daemon or unix://PATH to relay to)
  --option NAME VALUE    set a Nix setting (overrides nix.conf)
  --NAME VALUE           the same, for any setting; --NAME / --no-NAME for
                         boolean settings; --extra-NAME VALUE appends
  -v, --verbose          log more (repeatable); --quiet less; --debug all
  --version              print the version
  --help                 print this help

See 'silo daemon --help' for what silo does differently.
`
