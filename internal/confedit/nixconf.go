// Package confedit edits Nix's configuration files the way a person would:
// nix.conf settings whose values are word lists (extra-substituters,
// extra-trusted-public-keys) and netrc entries, keeping every other line,
// comment and the files' modes, changing nothing that is already right,
// and writing atomically. Each edit reports what it changed.
package confedit

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// File is a text file being edited: its lines, and whether they changed.
type File struct {
	Path    string
	lines   []string
	mode    fs.FileMode
	existed bool
	changed bool
}

// Open reads path; a missing file is empty and is created by Save with mode.
func Open(path string, mode fs.FileMode) (*File, error) {
	f := &File{Path: path, mode: mode}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil {
		f.mode = st.Mode().Perm()
	}
	f.existed = true
	text := strings.TrimSuffix(string(data), "\n")
	if text != "" {
		f.lines = strings.Split(text, "\n")
	}
	return f, nil
}

// Changed reports whether an edit changed the file.
func (f *File) Changed() bool { return f.changed }

// Save writes the file if it changed: to a temporary file in the same
// directory (created with mode 0755 if missing), then renamed over it.
func (f *File) Save() error {
	if !f.changed {
		return nil
	}
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+".silo-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	defer os.Remove(tmp.Name())
	var buf bytes.Buffer
	for _, l := range f.lines {
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	_, err = tmp.Write(buf.Bytes())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), f.mode)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.Path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	f.changed, f.existed = false, true
	return nil
}

// setting splits a nix.conf line into name and value; ok is false for
// comments, blank lines and includes.
func setting(line string) (name, value string, ok bool) {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	name, value, ok = strings.Cut(line, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return "", "", false
	}
	return name, strings.TrimSpace(value), true
}

// Get returns the value of the last line setting name, and whether one does.
func (f *File) Get(name string) (string, bool) {
	val, found := "", false
	for _, l := range f.lines {
		if n, v, ok := setting(l); ok && n == name {
			val, found = v, true
		}
	}
	return val, found
}

// Has reports whether word is in the value of any of names in the file.
func (f *File) Has(word string, names ...string) bool {
	for _, l := range f.lines {
		if n, v, ok := setting(l); ok && slices.Contains(names, n) && slices.Contains(strings.Fields(v), word) {
			return true
		}
	}
	return false
}

// AddWord makes word part of list setting name (e.g. extra-substituters)
// unless it is already in name or in one of also (e.g. substituters). It
// appends to the last line setting name, else adds a line. It returns
// what it did, for the user.
func (f *File) AddWord(name, word string, also ...string) string {
	if f.Has(word, append([]string{name}, also...)...) {
		return fmt.Sprintf("%s already has %s in %s", f.Path, word, name)
	}
	for i := len(f.lines) - 1; i >= 0; i-- {
		if n, v, ok := setting(f.lines[i]); ok && n == name {
			comment := ""
			if j := strings.IndexByte(f.lines[i], '#'); j >= 0 {
				comment = " " + f.lines[i][j:]
			}
			f.lines[i] = strings.TrimSpace(name+" = "+strings.TrimSpace(v+" "+word)) + comment
			f.changed = true
			return fmt.Sprintf("added %s to %s in %s", word, name, f.Path)
		}
	}
	f.lines = append(f.lines, name+" = "+word)
	f.changed = true
	return fmt.Sprintf("added %s = %s to %s", name, word, f.Path)
}

// Set adds the line "name = value" unless name is already set; it never
// changes an existing setting (the user's choice wins) and says so.
func (f *File) Set(name, value string) string {
	if v, ok := f.Get(name); ok {
		return fmt.Sprintf("%s already sets %s = %s", f.Path, name, v)
	}
	f.lines = append(f.lines, name+" = "+value)
	f.changed = true
	return fmt.Sprintf("added %s = %s to %s", name, value, f.Path)
}

// SetNetrcPassword makes the netrc entry for machine host carry password
// (Nix sends it as HTTP Basic with an empty login). An entry for host
// with another password is rewritten in place; replaced reports that, as
// netrc holds one password per host.
func (f *File) SetNetrcPassword(host, password string) (msg string, replaced bool) {
	// Find the entry: tokens "machine host" up to the next "machine" or "default".
	type pos struct{ line, field int }
	var tokens []pos
	for li, l := range f.lines {
		for fi := range strings.Fields(l) {
			tokens = append(tokens, pos{li, fi})
		}
	}
	field := func(p pos) string { return strings.Fields(f.lines[p.line])[p.field] }
	for i := 0; i+1 < len(tokens); i++ {
		if field(tokens[i]) != "machine" || field(tokens[i+1]) != host {
			continue
		}
		for j := i + 2; j < len(tokens); j++ {
			w := field(tokens[j])
			if w == "machine" || w == "default" || w == "macdef" {
				break
			}
			if w == "password" && j+1 < len(tokens) {
				p := tokens[j+1]
				if field(p) == password {
					return fmt.Sprintf("%s already holds the token for %s", f.Path, host), false
				}
				words := strings.Fields(f.lines[p.line])
				words[p.field] = password
				f.lines[p.line] = strings.Join(words, " ")
				f.changed = true
				return fmt.Sprintf("replaced the password for %s in %s", host, f.Path), true
			}
		}
		// An entry without a password: add one after the host.
		p := tokens[i+1]
		words := strings.Fields(f.lines[p.line])
		words = slices.Insert(words, p.field+1, "password", password)
		f.lines[p.line] = strings.Join(words, " ")
		f.changed = true
		return fmt.Sprintf("added the token for %s to %s", host, f.Path), false
	}
	f.lines = append(f.lines, "machine "+host+" password "+password)
	f.changed = true
	return fmt.Sprintf("added the token for %s to %s", host, f.Path), false
}
