package builtins

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/nixtest"
)

// treeWithModes lists a directory with modes and contents.
func treeWithModes(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		st, _ := os.Lstat(p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "-> " + target
		case d.IsDir():
			out[rel] = "dir"
		default:
			b, _ := os.ReadFile(p)
			out[rel] = fmt.Sprintf("%o %q", st.Mode().Perm()&0o111, b)
		}
		return nil
	})
	return out
}

func makeChannelTarball(t *testing.T, dir, compressFlag string) string {
	t.Helper()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "nixexprs-1.0/pkgs/sub"), 0o755)
	os.WriteFile(filepath.Join(src, "nixexprs-1.0/default.nix"), []byte("{ }\n"), 0o644)
	os.WriteFile(filepath.Join(src, "nixexprs-1.0/pkgs/run.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(src, "nixexprs-1.0/pkgs/sub/x"), []byte("x"), 0o644)
	os.Symlink("../default.nix", filepath.Join(src, "nixexprs-1.0/pkgs/link"))
	os.Link(filepath.Join(src, "nixexprs-1.0/pkgs/sub/x"), filepath.Join(src, "nixexprs-1.0/pkgs/hard"))
	tarball := filepath.Join(dir, "channel.tar"+map[string]string{"j": ".bz2", "J": ".xz", "z": ".gz", "": ""}[compressFlag])
	out, err := exec.Command("tar", "-c"+compressFlag+"f", tarball, "-C", src, "nixexprs-1.0").CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	return tarball
}

// TestUnpackChannelMatchesNix unpacks channel tarballs with the real
// Nix's builtin:unpack-channel and with UnpackChannel.
func TestUnpackChannelMatchesNix(t *testing.T) {
	n := nixtest.Require(t)
	for _, flag := range []string{"j", "J", "z", ""} {
		if flag == "J" {
			if _, err := exec.LookPath("xz"); err != nil {
				continue
			}
		}
		t.Run("tar"+flag, func(t *testing.T) {
			dir := t.TempDir()
			tarball := makeChannelTarball(t, dir, flag)
			expr := fmt.Sprintf(`derivation { name = "channel-%s"; system = "builtin"; builder = "builtin:unpack-channel"; channelName = "nixpkgs"; src = %s; }`,
				nixtest.Nonce(), tarball)
			var res []struct {
				Outputs map[string]string `json:"outputs"`
			}
			if err := json.Unmarshal([]byte(n.Run("nix", "build", "--json", "--no-link", "--impure", "--expr", expr)), &res); err != nil || len(res) != 1 {
				t.Fatalf("nix build: %v", err)
			}
			want := treeWithModes(t, res[0].Outputs["out"])
			out := filepath.Join(dir, "out")
			if err := UnpackChannel(map[string]string{"out": out, "channelName": "nixpkgs", "src": tarball}); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, treeWithModes(t, out)); diff != "" {
				t.Errorf("unpacked channel differs from Nix's (-nix +silo):\n%s", diff)
			}
		})
	}
}

func TestUnpackRefusesEscapes(t *testing.T) {
	type entry struct {
		name, link string
		typ        byte
	}
	tests := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dotdot", []entry{{name: "a/../../x", typ: tar.TypeReg}}, "contains '..'"},
		{"through symlink", []entry{{name: "l", link: "/tmp", typ: tar.TypeSymlink}, {name: "l/x", typ: tar.TypeReg}}, "through the symlink"},
		{"hard link outside", []entry{{name: "h", link: "../../etc/passwd", typ: tar.TypeLink}}, "outside the archive"},
		{"hard link to symlink", []entry{{name: "l", link: "/etc/passwd", typ: tar.TypeSymlink}, {name: "h", link: "l", typ: tar.TypeLink}}, "not a file of the archive"},
		{"device", []entry{{name: "dev", typ: tar.TypeChar}}, "unsupported type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range tt.entries {
				tw.WriteHeader(&tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644})
			}
			tw.Close()
			dest := t.TempDir()
			err := untar(&buf, dest)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("untar = %v, want %q", err, tt.want)
			}
		})
	}
	// Absolute names land inside the destination; setuid bits are dropped.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "/abs/file", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	dest := t.TempDir()
	if err := untar(&buf, dest); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dest, "abs/file"))
	if err != nil || st.Mode()&fs.ModeSetuid != 0 || st.Mode().Perm() != 0o755 {
		t.Errorf("absolute entry: %v %v", st, err)
	}
	// More than one top-level entry is Nix's error.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "b"), nil, 0o644)
	tarball := filepath.Join(dir, "two.tar")
	if out, err := exec.Command("tar", "-cf", tarball, "-C", dir, "a", "b").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	if err := UnpackChannel(map[string]string{"out": filepath.Join(dir, "out"), "channelName": "c", "src": tarball}); err == nil ||
		err.Error() != "channel tarball '"+tarball+"' contains more than one file" {
		t.Errorf("two entries: %v", err)
	}
}

func TestRunDispatch(t *testing.T) {
	if err := Run(context.Background(), "builtin:nope", nil, FetchOptions{}, nil); err == nil || err.Error() != "unsupported builtin builder 'nope'" {
		t.Errorf("Run = %v", err)
	}
	out := filepath.Join(t.TempDir(), "env")
	if err := Run(context.Background(), "builtin:buildenv", map[string]string{"out": out, "derivations": "", "manifest": "/m"}, FetchOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(out, "manifest.nix")); err != nil || target != "/m" {
		t.Errorf("manifest.nix -> %q, %v", target, err)
	}
}

// FuzzUntar feeds hostile tar streams to untar: it may fail, but must
// never write outside its destination.
func FuzzUntar(f *testing.F) {
	for _, entries := range [][]tar.Header{
		{{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "a/f", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "l", Linkname: "..", Typeflag: tar.TypeSymlink}, {Name: "l/x", Typeflag: tar.TypeReg}},
		{{Name: "h", Linkname: "../x", Typeflag: tar.TypeLink}},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			tw.WriteHeader(&h)
		}
		tw.Close()
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		dest := filepath.Join(root, "dest")
		os.Mkdir(dest, 0o755)
		untar(bytes.NewReader(data), dest)
		ents, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "dest" {
			t.Fatalf("untar wrote outside its destination: %v", ents)
		}
		exec.Command("chmod", "-R", "u+rwx", root).Run()
	})
}
