// Package cli implements silo's command line: a tree of subcommands, each
// with its own flags and --help, settings from flags, SILO_* environment
// variables and a config file, and exit codes (0 ok, 1 failure, 2 usage).
//
// Commands register themselves from the file that implements them, so each
// concern's commands live beside each other and cmd/silo only wires.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/silo-cache/silo/internal/suggest"
)

// Env is what a command may touch of the process: its streams and
// environment. Tests substitute their own.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// LookupEnv tells an unset variable from an empty one; nil means
	// Getenv's answer, unset when empty.
	LookupEnv func(string) (string, bool)
	// Argv0 is the name the program was started under: as nix-daemon,
	// silo acts as nix-daemon (see daemon.go).
	Argv0 string
	// Environ is the environment of commands silo runs (silo watch-exec);
	// nil means the process's own.
	Environ func() []string
}

// OSEnv returns the process's own Env.
func OSEnv() *Env {
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, LookupEnv: os.LookupEnv, Argv0: os.Args[0]}
}

// Command is one leaf subcommand.
type Command struct {
	Name  string // words after "silo", space-separated: "nar dump"
	Args  string // positional arguments for the usage line: "PATH"
	Short string // one line for listings
	Long  string // shown by --help after the usage line
	// Setup defines the command's flags on fs and returns the function that
	// runs it once flags are parsed. args are the positional arguments.
	Setup func(fs *flag.FlagSet) func(ctx context.Context, env *Env, args []string) error
	// ServeConfig: the command reads silo serve's --config file, whose keys
	// for serve's other settings it ignores (the admin commands).
	ServeConfig bool
	// FlagsFirst: flags end at the first argument, so that the rest (a
	// command to run) keeps its own flags (silo watch-exec).
	FlagsFirst bool
}

var commands = map[string]*Command{}

// personalities are other programs silo can be installed as: started
// under one of these names, silo runs it instead of its own command tree.
var personalities = map[string]func(ctx context.Context, args []string, env *Env) int{}

// Register adds c to the command tree. It is called from init functions.
func Register(c *Command) {
	if _, dup := commands[c.Name]; dup {
		panic("cli: duplicate command " + c.Name)
	}
	commands[c.Name] = c
}

// UsageError marks an error in how a command was called; it exits with 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// ExitError carries a specific exit code without a message of its own
// (the command has already reported what went wrong).
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Main runs silo with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, env *Env) int {
	maybeSandboxInit(args)
	if personality, ok := personalities[filepath.Base(env.Argv0)]; ok {
		return personality(ctx, args, env)
	}
	err := run(ctx, args, env)
	if err == nil {
		return 0
	}
	var exit *ExitError
	if errors.As(err, &exit) {
		return exit.Code
	}
	var usage *UsageError
	if errors.As(err, &usage) {
		fmt.Fprintf(env.Stderr, "silo: %s\n", usage.Msg)
		return 2
	}
	fmt.Fprintf(env.Stderr, "silo: %s\n", oneLine(err.Error()))
	return 1
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }

func run(ctx context.Context, args []string, env *Env) error {
	// Find the longest registered command name that prefixes args: "queue
	// status" wins over "queue".
	var words []string
	var cmd *Command
	i, cmdEnd := 0, 0
	for ; i < len(args); i++ {
		if strings.HasPrefix(args[i], "-") {
			break
		}
		words = append(words, args[i])
		name := strings.Join(words, " ")
		if c, ok := commands[name]; ok {
			cmd, cmdEnd = c, i+1
		}
		if !isGroup(name) {
			i++
			break
		}
	}
	if cmd != nil {
		return runCommand(ctx, cmd, args[cmdEnd:], env)
	}
	group := strings.Join(words, " ")
	if len(words) > 0 && !isGroup(group) {
		group = strings.Join(words[:len(words)-1], " ")
		if len(words) == 1 && words[0] == "help" {
			listCommands(env.Stdout, "")
			return nil
		}
		listCommands(env.Stderr, group)
		typed := strings.Join(words, " ")
		guess := typed
		if i < len(args) && !strings.HasPrefix(args[i], "-") {
			guess += " " + args[i] // "cahce list": suggest the whole command
		}
		best, ok := suggest.Closest(guess, commandWords())
		if !ok {
			best, ok = suggest.Closest(typed, commandWords())
		}
		if ok {
			return Usagef("unknown command %q (did you mean %q? see the list above, or silo --help)", typed, "silo "+best)
		}
		return Usagef("unknown command %q (see the list above, or silo --help)", typed)
	}
	rest := args[i:]
	if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "--help" || rest[0] == "-help") {
		listCommands(env.Stdout, group)
		return nil
	}
	listCommands(env.Stderr, group)
	if len(rest) > 0 {
		return Usagef("unknown flag %s for %q (choose a subcommand)", rest[0], "silo "+group)
	}
	return Usagef("missing subcommand for %q", strings.TrimSpace("silo "+group))
}

// commandWords returns every command name and every group ("cache"),
// for suggestions.
func commandWords() []string {
	seen := map[string]bool{}
	var out []string
	for name := range commands {
		words := strings.Fields(name)
		for i := 1; i <= len(words); i++ {
			w := strings.Join(words[:i], " ")
			if !seen[w] {
				seen[w] = true
				out = append(out, w)
			}
		}
	}
	sort.Strings(out)
	return out
}

func flagNames(fs *flag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

func isGroup(prefix string) bool {
	for name := range commands {
		if strings.HasPrefix(name, prefix+" ") {
			return true
		}
	}
	return false
}

func listCommands(w io.Writer, group string) {
	var names []string
	for name := range commands {
		if group == "" || strings.HasPrefix(name, group+" ") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if group == "" {
		fmt.Fprintln(w, "silo: the store side of Nix: binary cache, push queue, store publisher.")
		fmt.Fprintln(w, "\nUsage: silo COMMAND [flags] [args]\n\nCommands:")
	} else {
		fmt.Fprintf(w, "Usage: silo %s COMMAND [flags] [args]\n\nCommands:\n", group)
	}
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		fmt.Fprintf(w, "  %-*s  %s\n", width, n, commands[n].Short)
	}
	fmt.Fprintln(w, "\nRun 'silo COMMAND --help' for a command's flags.")
}

func runCommand(ctx context.Context, cmd *Command, args []string, env *Env) error {
	fs := flag.NewFlagSet("silo "+cmd.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runFn := cmd.Setup(fs)
	fs.Usage = func() {} // runCommand prints usage itself on --help
	var pos []string
	var err error
	if cmd.FlagsFirst {
		err = fs.Parse(args)
		pos = fs.Args()
	} else {
		pos, err = parseInterspersed(fs, args)
	}
	if errors.Is(err, flag.ErrHelp) {
		printUsage(env.Stdout, cmd, fs)
		return nil
	}
	if err != nil {
		hint := ""
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
			if best, ok := suggest.Closest(strings.TrimLeft(name, "-"), flagNames(fs)); ok {
				hint = "did you mean --" + best + "? "
			}
		}
		return Usagef("%s: %v (%ssee silo %s --help)", cmd.Name, err, hint, cmd.Name)
	}
	if err := applySettings(fs, env, cmd.ServeConfig); err != nil {
		return Usagef("%s: %v", cmd.Name, err)
	}
	return runFn(ctx, env, pos)
}

// parseInterspersed parses flags that may appear before, between or after
// positional arguments; "--" ends flag parsing.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first non-flag or after "--".
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func printUsage(w io.Writer, cmd *Command, fs *flag.FlagSet) {
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	usage := "silo " + cmd.Name
	if hasFlags {
		usage += " [flags]"
	}
	if cmd.Args != "" {
		usage += " " + cmd.Args
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", usage, cmd.Short)
	if cmd.Long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.Long))
	}
	if hasFlags {
		fmt.Fprintln(w, "\nFlags (each also settable as the environment variable shown):")
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if name != "" {
				line += " " + name
			}
			fmt.Fprintf(w, "%s\n      %s", line, usage)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, " [$%s]\n", EnvName(f.Name))
		})
	}
}
