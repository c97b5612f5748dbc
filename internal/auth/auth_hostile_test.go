package auth

// Checks written by an independent security review: token secrets are
// compared only in constant time, and hostile credentials are refused.

import (
	"encoding/base64"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/meta"
)

// Check compares with crypto/subtle, and no code that handles tokens (this
// package, the servers, the commands) compares a token hash or text any
// other way: no ==, !=, bytes.Equal, bytes.Compare or strings.Compare
// with a token's Hash, nor a string made of it. A timing test would be
// flaky; this reads the source instead.
func TestHostileTokenComparisonsAreConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "auth.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var check *ast.FuncDecl
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "Check" && fd.Recv == nil {
			check = fd
		}
	}
	if check == nil {
		t.Fatal("auth.go has no func Check")
	}
	var subtle bool
	ast.Inspect(check, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "ConstantTimeCompare" {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "subtle" {
				subtle = true
			}
		}
		return true
	})
	if !subtle {
		t.Error("Check does not compare with subtle.ConstantTimeCompare")
	}

	// mentionsHash reports whether e reads a .Hash field or calls Hash().
	mentionsHash := func(e ast.Expr) bool {
		found := false
		ast.Inspect(e, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if n.Sel.Name == "Hash" {
					found = true
				}
			case *ast.Ident:
				if n.Name == "Hash" {
					found = true
				}
			}
			return !found
		})
		return found
	}
	for _, dir := range []string{".", "../cache", "../publish", "../cli"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			src, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(src), "Hash") {
				continue
			}
			file, err := parser.ParseFile(fset, name, src, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BinaryExpr:
					if (n.Op == token.EQL || n.Op == token.NEQ) && isTokenHash(n.X) && isTokenHash(n.Y) {
						t.Errorf("%s: token hashes compared with %s", fset.Position(n.Pos()), n.Op)
					}
				case *ast.CallExpr:
					sel, ok := n.Fun.(*ast.SelectorExpr)
					if !ok {
						return true
					}
					pkg, _ := sel.X.(*ast.Ident)
					if pkg == nil || !(pkg.Name == "bytes" && (sel.Sel.Name == "Equal" || sel.Sel.Name == "Compare") ||
						pkg.Name == "strings" && sel.Sel.Name == "Compare") {
						return true
					}
					for _, a := range n.Args {
						if mentionsHash(a) && isTokenHash(a) {
							t.Errorf("%s: token hash compared with %s.%s", fset.Position(n.Pos()), pkg.Name, sel.Sel.Name)
						}
					}
				}
				return true
			})
		}
	}
}

// isTokenHash reports whether e is a token record's hash or a token's
// hash: x.Hash where x is not a narinfo or path field chain (NarHash,
// FileHash are other fields), auth.Hash(...) or Hash(...), or string(...)
// of one of those.
func isTokenHash(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.SelectorExpr:
		return e.Sel.Name == "Hash"
	case *ast.CallExpr:
		switch f := e.Fun.(type) {
		case *ast.Ident:
			if f.Name == "Hash" {
				return true
			}
			if f.Name == "string" && len(e.Args) == 1 {
				return isTokenHash(e.Args[0])
			}
		case *ast.SelectorExpr:
			if id, ok := f.X.(*ast.Ident); ok && id.Name == "auth" && f.Sel.Name == "Hash" {
				return true
			}
		}
	}
	return false
}

// Check refuses records whose hash has the wrong length or is missing, as
// a corrupt or hostile record might: it never accepts by a short compare.
func TestHostileCheckMalformedRecords(t *testing.T) {
	text, rec, err := NewRandom("*", meta.PermPull, time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range [][]byte{nil, {}, rec.Hash[:31], rec.Hash[:1], append(append([]byte{}, rec.Hash...), 0), make([]byte, 32)} {
		bad := rec
		bad.Hash = h
		if err := Check(bad, text, time.Now()); !errors.Is(err, ErrRejected) {
			t.Errorf("Check with a %d-byte record hash = %v, want ErrRejected", len(h), err)
		}
	}
	// The empty text against a record of the empty text's hash is not a
	// token either: ID refuses it before any lookup.
	if _, err := ID(""); !errors.Is(err, ErrMalformed) {
		t.Errorf("ID(\"\") = %v", err)
	}
}

// Hostile Authorization headers are either refused outright (presented,
// unusable) or yield text that ID refuses; none is read as no credentials
// (which a public cache would serve) with a token ignored silently, and
// none yields a token from the user name.
func TestHostileFromRequest(t *testing.T) {
	text, _, _ := NewRandom("*", meta.PermPull, time.Time{}, "")
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name, header string
		wantOK       bool
		wantText     string
	}{
		{"user, empty password", "Basic " + b64([]byte("user:")), true, ""},
		{"token as user name", "Basic " + b64([]byte(text+":")), true, ""},
		{"no colon", "Basic " + b64([]byte(text)), true, ""},
		{"bad base64", "Basic ***", true, ""},
		{"lower-case bearer", "bearer " + text, true, ""},
		{"bearer without space", "Bearer" + text, true, ""},
		{"unknown scheme", "Token " + text, true, ""},
		{"token with a newline", "Bearer " + text + "\nX", true, text + "\nX"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "http://x/", nil)
			r.Header.Set("Authorization", tt.header)
			got, ok := FromRequest(r)
			if ok != tt.wantOK || got != tt.wantText {
				t.Errorf("FromRequest = %q, %v; want %q, %v", got, ok, tt.wantText, tt.wantOK)
			}
			if _, err := ID(got); got != text && err == nil {
				if Check(meta.Token{Hash: Hash(text)}, got, time.Now()) == nil {
					t.Errorf("%q passes as the token", got)
				}
			}
		})
	}
}
