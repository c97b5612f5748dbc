package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/silo-cache/silo/internal/units"
)

const installUnitsLong = `Installs silo's systemd units for a machine without NixOS (on NixOS use the
module: services.silo.*): silo-serve, silo-publish, silo-queue and
silo-daemon (each a .socket and a .service, socket-activated), silo-gc
(.service and .timer), the post-build-hook wrapper (--hook) and
silo-serve-admin (--admin), and config templates in --config-dir when
missing. The units are the text the NixOS module installs, with this
machine's paths: --bin (default: this silo binary) and --nix-bin-dir.

Units and wrappers are replaced on every run; change them with drop-ins
(systemctl edit UNIT). Config files are never overwritten. Nothing is
enabled or started: the command prints what to run next.
See docs/deploy.md.`

func init() {
	Register(&Command{
		Name:  "install-units",
		Short: "install silo's systemd units, hook wrapper and config templates (machines without NixOS)",
		Long:  installUnitsLong,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			var o units.Options
			fs.StringVar(&o.UnitDir, "unit-dir", "/etc/systemd/system", "`DIR` for the unit files")
			fs.StringVar(&o.Silo, "bin", "", "the silo binary the units run (default: this one, symlinks resolved)")
			fs.StringVar(&o.NixBinDir, "nix-bin-dir", "", "`DIR` holding nix-collect-garbage, for silo-gc (default: where PATH finds it, else /usr/bin)")
			fs.StringVar(&o.ConfigDir, "config-dir", "/etc/silo", "`DIR` for silo's config files and the secrets the units load")
			fs.StringVar(&o.Hook, "hook", "/etc/nix/silo-post-build-hook", "`FILE` for the post-build-hook wrapper")
			fs.StringVar(&o.Admin, "admin", "", "`FILE` for silo-serve-admin (default: beside --bin)")
			dryRun := fs.Bool("dry-run", false, "print what would be written, write nothing")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("install-units: takes no arguments, got %q", args)
				}
				if o.Silo == "" {
					exe, err := os.Executable()
					if err == nil {
						exe, err = filepath.EvalSymlinks(exe)
					}
					if err != nil {
						return fmt.Errorf("install-units: find this binary: %w (give --bin)", err)
					}
					o.Silo = exe
				}
				if !filepath.IsAbs(o.Silo) {
					return Usagef("install-units: --bin %q: want an absolute path", o.Silo)
				}
				if strings.HasPrefix(o.Silo, os.TempDir()+"/") {
					fmt.Fprintf(env.Stderr, "silo: warning: %s is a temporary binary (go run?); install silo and give --bin\n", o.Silo)
				}
				if o.NixBinDir == "" {
					o.NixBinDir = "/usr/bin"
					if p, err := exec.LookPath("nix-collect-garbage"); err == nil {
						if p, err = filepath.EvalSymlinks(p); err == nil {
							o.NixBinDir = filepath.Dir(p)
						}
					}
				}
				o = o.WithDefaults()
				files, err := units.Files(o)
				if err != nil {
					return Usagef("install-units: %v", err)
				}
				res, err := units.Install(files, *dryRun)
				for _, r := range res {
					verb := r.Action
					if *dryRun && verb != "unchanged" && verb != "kept" {
						verb = "would be " + verb
					}
					fmt.Fprintf(env.Stdout, "%-18s %s\n", verb, r.Path)
				}
				if err != nil {
					return fmt.Errorf("install-units: %w (run as root, or choose other directories)", err)
				}
				printNextSteps(env, o)
				return nil
			}
		},
	})
}

func printNextSteps(env *Env, o units.Options) {
	c := o.ConfigDir
	fmt.Fprintf(env.Stdout, `
Next (as root):
  systemctl daemon-reload
  systemctl enable --now silo-serve.socket     # binary cache on 127.0.0.1:8080; settings in %[1]s/serve.toml
  systemctl enable --now silo-publish.socket   # this store on port 5000; needs %[1]s/publish-key.sec
  systemctl enable --now silo-queue.socket     # needs to = ... in %[1]s/queue.toml and %[1]s/queue.netrc
    and in /etc/nix/nix.conf:  post-build-hook = %[2]s   (then restart nix-daemon)
  systemctl enable --now silo-gc.timer         # nix-collect-garbage daily at 03:15
  %[3]s cache create main                  # admin commands as silo serve's user
silo daemon in place of nix-daemon (a silo built with silo daemon):
  systemctl disable --now nix-daemon.socket nix-daemon.service
  systemctl enable --now silo-daemon.socket
Listen elsewhere with a drop-in: systemctl edit silo-serve.socket
  [Socket]
  ListenStream=
  ListenStream=0.0.0.0:8080
`, c, o.Hook, o.Admin)
	if fi, err := os.Stat("/nix/var/nix/daemon-socket"); err == nil && fi.Mode().Perm()&0o001 == 0 {
		fmt.Fprintf(env.Stdout, `
silo-publish runs as a dynamic user and reads the store through nix-daemon,
whose socket directory /nix/var/nix/daemon-socket is not open to everyone
here; let it in with systemctl edit silo-publish (group of that directory):
  [Service]
  PrivateUsers=no
  SupplementaryGroups=%s
`, groupOf(fi))
	}
}

// groupOf returns the name of fi's group, or its number.
func groupOf(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "GROUP"
	}
	gid := strconv.FormatUint(uint64(st.Gid), 10)
	if g, err := user.LookupGroupId(gid); err == nil {
		return g.Name
	}
	return gid
}
