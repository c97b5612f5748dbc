package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    map[string][]string
		wantErr string
	}{
		{
			name: "all kinds",
			file: "listen = \"unix:/run/silo.sock\"\nmax-upload = 1024\npublic = true\nsigning-key-file = [\"a\", \"b\"]\n",
			want: map[string][]string{"listen": {"unix:/run/silo.sock"}, "max-upload": {"1024"}, "public": {"true"}, "signing-key-file": {"a", "b"}},
		},
		{name: "not toml", file: "listen = \n", wantErr: "not valid TOML"},
		{name: "table", file: "[server]\nlisten = \"x\"\n", wantErr: `key "server"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "silo.toml")
			os.WriteFile(path, []byte(tt.file), 0o644)
			got, err := Load(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Load (-want +got):\n%s", d)
			}
		})
	}
}
