package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/silo-cache/silo/internal/suggest"
)

// serveFlagNames returns the names of silo serve's flags.
var serveFlagNames = sync.OnceValue(func() map[string]bool {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	defineServeFlags(fs)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
})

// EnvName returns the environment variable that sets flag name:
// "data-dir" is SILO_DATA_DIR.
func EnvName(flagName string) string {
	return "SILO_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ConfigLoader reads a config file into flag-name → values. It is set by
// the package that owns the config format.
var ConfigLoader func(path string) (map[string][]string, error)

// applySettings fills flags not given on the command line, first from
// SILO_* environment variables, then from the file named by the "config"
// flag (or $SILO_CONFIG), if the command has one. A value that does not
// parse is an error, never replaced by the default.
//
// With serveConfig, keys that name silo serve's settings and not the
// command's are ignored: admin commands share serve's config file.
func applySettings(fs *flag.FlagSet, env *Env, serveConfig bool) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := env.Getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("$%s=%q: %v", EnvName(f.Name), v, err))
			}
			set[f.Name] = true
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	cf := fs.Lookup("config")
	if cf == nil || cf.Value.String() == "" {
		return nil
	}
	if ConfigLoader == nil {
		return fmt.Errorf("config files are not supported by this build")
	}
	path := cf.Value.String()
	values, err := ConfigLoader(path)
	if err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("config file %s does not exist (create it or drop --config)", path)
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for key, vals := range values {
		f := fs.Lookup(key)
		if f == nil && serveConfig && serveFlagNames()[key] {
			continue
		}
		if f == nil || key == "config" {
			hint := ""
			known := flagNames(fs)
			if serveConfig {
				for k := range serveFlagNames() {
					known = append(known, k)
				}
			}
			if best, ok := suggest.Closest(key, known); ok && best != "config" {
				hint = fmt.Sprintf("did you mean %q? ", best)
			}
			return fmt.Errorf("config file %s: unknown key %q (%skeys are the command's flag names)", path, key, hint)
		}
		if set[key] {
			continue
		}
		for _, v := range vals {
			if err := fs.Set(key, v); err != nil {
				return fmt.Errorf("config file %s: %s = %q: %v", path, key, v, err)
			}
		}
	}
	return nil
}

// StringList is a repeatable string flag.
type StringList []string

func (l *StringList) String() string     { return strings.Join(*l, ",") }
func (l *StringList) Set(v string) error { *l = append(*l, v); return nil }
