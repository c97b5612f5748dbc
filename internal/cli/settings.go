package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

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
func applySettings(fs *flag.FlagSet, env *Env) error {
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
		if f == nil || key == "config" {
			return fmt.Errorf("config file %s: unknown key %q (keys are the command's flag names)", path, key)
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
