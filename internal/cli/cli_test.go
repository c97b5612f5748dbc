package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// registerTestCommand adds "test echo", which prints its settings.
func init() {
	Register(&Command{
		Name:  "zz-test echo",
		Args:  "WORDS...",
		Short: "print settings (test only)",
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			listen := fs.String("listen", "127.0.0.1:8080", "address")
			fs.String("config", "", "config file")
			var keys StringList
			fs.Var(&keys, "key", "repeatable")
			fail := fs.Bool("fail", false, "fail")
			return func(ctx context.Context, env *Env, args []string) error {
				if *fail {
					return errors.New("open /x: permission denied")
				}
				env.Stdout.Write([]byte(*listen + "|" + keys.String() + "|" + strings.Join(args, ",")))
				return nil
			}
		},
	})
}

func runCLI(t *testing.T, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return vars[k] }}
	code = Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

func TestMain(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "silo.toml")
	os.WriteFile(cfg, []byte("listen = \"from-config:1\"\nkey = [\"c1\", \"c2\"]\n"), 0o644)
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("nope = 1\n"), 0o644)
	tests := []struct {
		name       string
		vars       map[string]string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "defaults", args: []string{"zz-test", "echo", "a"}, wantStdout: "127.0.0.1:8080||a"},
		{name: "interspersed flags", args: []string{"zz-test", "echo", "a", "--listen", "x:1", "b", "--key=k"}, wantStdout: "x:1|k|a,b"},
		{name: "double dash", args: []string{"zz-test", "echo", "--", "--listen"}, wantStdout: "127.0.0.1:8080||--listen"},
		{name: "env", vars: map[string]string{"SILO_LISTEN": "env:1"}, args: []string{"zz-test", "echo"}, wantStdout: "env:1||"},
		{name: "flag beats env", vars: map[string]string{"SILO_LISTEN": "env:1"}, args: []string{"zz-test", "echo", "--listen", "f:1"}, wantStdout: "f:1||"},
		{name: "config", args: []string{"zz-test", "echo", "--config", cfg}, wantStdout: "from-config:1|c1,c2|"},
		{name: "env beats config", vars: map[string]string{"SILO_LISTEN": "env:1", "SILO_CONFIG": cfg}, args: []string{"zz-test", "echo"}, wantStdout: "env:1|c1,c2|"},
		{name: "unknown config key", args: []string{"zz-test", "echo", "--config", bad}, wantCode: 2, wantStderr: `unknown key "nope"`},
		{name: "missing config", args: []string{"zz-test", "echo", "--config", "/nonexistent.toml"}, wantCode: 2, wantStderr: "does not exist"},
		{name: "help", args: []string{"zz-test", "echo", "--help"}, wantStdout: "SILO_LISTEN"},
		{name: "bad flag", args: []string{"zz-test", "echo", "--nope"}, wantCode: 2, wantStderr: "--help"},
		{name: "failure", args: []string{"zz-test", "echo", "--fail"}, wantCode: 1, wantStderr: "silo: open /x: permission denied\n"},
		{name: "group lists", args: []string{"zz-test"}, wantCode: 2, wantStderr: "zz-test echo"},
		{name: "group help", args: []string{"zz-test", "--help"}, wantStdout: "zz-test echo"},
		{name: "top help", args: []string{"--help"}, wantStdout: "Commands:"},
		{name: "unknown", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.vars, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			if tt.wantStdout != "" && !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("stdout = %q, want it to contain %q", stdout, tt.wantStdout)
			}
			if n := strings.Count(stdout, "Usage:"); n > 1 {
				t.Errorf("stdout has %d usage lines, want at most one:\n%s", n, stdout)
			}
			if tt.wantStderr != "" && !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.wantStderr)
			}
		})
	}
}

func init() {
	for _, name := range []string{"zz-nest", "zz-nest deeper"} {
		name := name
		Register(&Command{Name: name, Short: "test", Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			return func(ctx context.Context, env *Env, args []string) error {
				env.Stdout.Write([]byte(name + ":" + strings.Join(args, ",")))
				return nil
			}
		}})
	}
}

// TestLongestMatch: a command that is also a group runs itself unless a
// longer command name matches.
func TestLongestMatch(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"zz-nest"}, "zz-nest:"},
		{[]string{"zz-nest", "deeper", "x"}, "zz-nest deeper:x"},
		{[]string{"zz-nest", "other"}, "zz-nest:other"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCLI(t, nil, tt.args...)
		if code != 0 || stdout != tt.want {
			t.Errorf("silo %v: code %d stdout %q stderr %q, want %q", tt.args, code, stdout, stderr, tt.want)
		}
	}
}
