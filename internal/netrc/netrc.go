// Package netrc reads netrc files the way curl reads them for Nix's
// netrc-file setting: "machine HOST", "default", "login", "password",
// "account" and "macdef" tokens separated by whitespace, "#" comments,
// double-quoted tokens with backslash escapes. The first entry for a host
// wins; "default" applies to hosts without one.
//
// A missing file is an empty one (curl's CURL_NETRC_OPTIONAL): a daemon
// with no credentials sends none.
package netrc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// MaxSize is the largest netrc file Read accepts.
const MaxSize = 1 << 20

// Entry holds the credentials for one machine.
type Entry struct {
	Login    string
	Password string
}

// File is a parsed netrc file.
type File struct {
	machines map[string]Entry
	def      *Entry
}

// Lookup returns the entry for host (a host name without port, as curl
// matches it), else the default entry.
func (f *File) Lookup(host string) (Entry, bool) {
	if f == nil {
		return Entry{}, false
	}
	if e, ok := f.machines[host]; ok {
		return e, true
	}
	if f.def != nil {
		return *f.def, true
	}
	return Entry{}, false
}

// Read reads and parses the file at path; a missing file is empty.
func Read(path string) (*File, error) {
	if path == "" {
		return Parse(""), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Parse(""), nil
		}
		return nil, fmt.Errorf("reading netrc file: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("netrc file %s is larger than %d bytes", path, MaxSize)
	}
	return Parse(string(data)), nil
}

// Parse parses netrc text. It never fails: what curl would ignore is
// ignored.
func Parse(data string) *File {
	f := &File{machines: map[string]Entry{}}
	t := tokenizer{s: data}
	var cur *Entry
	var host string
	isDefault := false
	flush := func() {
		if cur == nil {
			return
		}
		if isDefault {
			if f.def == nil {
				f.def = cur
			}
		} else if _, dup := f.machines[host]; !dup {
			f.machines[host] = *cur
		}
		cur = nil
	}
	for {
		tok, ok := t.next()
		if !ok {
			break
		}
		switch tok {
		case "machine":
			flush()
			host, _ = t.next()
			cur, isDefault = &Entry{}, false
		case "default":
			flush()
			cur, isDefault = &Entry{}, true
		case "login", "password", "account":
			v, _ := t.next()
			if cur == nil {
				continue
			}
			switch tok {
			case "login":
				cur.Login = v
			case "password":
				cur.Password = v
			}
		case "macdef":
			t.skipMacro()
		}
	}
	flush()
	return f
}

type tokenizer struct {
	s string
	i int
}

// next returns the next token: whitespace-separated, "#" to the end of
// the line a comment (at the start of a token), "..." quoted with \
// escapes.
func (t *tokenizer) next() (string, bool) {
	for t.i < len(t.s) {
		c := t.s[t.i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			t.i++
		case c == '#':
			for t.i < len(t.s) && t.s[t.i] != '\n' {
				t.i++
			}
		case c == '"':
			t.i++
			var b strings.Builder
			for t.i < len(t.s) && t.s[t.i] != '"' {
				if t.s[t.i] == '\\' && t.i+1 < len(t.s) {
					t.i++
					switch t.s[t.i] {
					case 'n':
						b.WriteByte('\n')
					case 'r':
						b.WriteByte('\r')
					case 't':
						b.WriteByte('\t')
					default:
						b.WriteByte(t.s[t.i])
					}
				} else {
					b.WriteByte(t.s[t.i])
				}
				t.i++
			}
			t.i++ // the closing quote
			return b.String(), true
		default:
			start := t.i
			for t.i < len(t.s) && !strings.ContainsRune(" \t\n\r", rune(t.s[t.i])) {
				t.i++
			}
			return t.s[start:t.i], true
		}
	}
	return "", false
}

// skipMacro skips a macdef body: the rest of its line and every line up
// to the next empty one.
func (t *tokenizer) skipMacro() {
	nl := strings.IndexByte(t.s[t.i:], '\n')
	if nl < 0 {
		t.i = len(t.s)
		return
	}
	t.i += nl + 1
	end := strings.Index(t.s[t.i:], "\n\n")
	if end < 0 {
		t.i = len(t.s)
		return
	}
	t.i += end + 2
}
