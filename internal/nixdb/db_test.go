package nixdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

func openTest(t *testing.T, dir string, ca bool) *DB {
	t.Helper()
	d, err := Open(context.Background(), Options{StoreDir: storepath.DefaultDir, Dir: dir, CADerivations: ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func rpath(t *testing.T, name string) storepath.Path {
	var b [20]byte
	rand.Read(b[:])
	p, err := storepath.DefaultDir.ParseBase(nix32.Encode(b[:]) + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func info(p storepath.Path, refs ...storepath.Path) *PathInfo {
	return &PathInfo{Path: p, NarHash: hash.Sum(hash.SHA256, []byte(p.String())), NarSize: 120, References: refs}
}

func noPath(storepath.Path) string { return "" }

func TestRegisterValidPaths(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, t.TempDir(), false)
	a, b, c := rpath(t, "a"), rpath(t, "b"), rpath(t, "c")
	// A batch may refer within itself and to itself.
	if err := d.RegisterValidPaths(ctx, []*PathInfo{info(b, a, b), info(a)}, noPath, nil); err != nil {
		t.Fatal(err)
	}
	got, err := d.QueryPathInfo(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.References) != 2 || got.NarSize != 120 || got.RegistrationTime.IsZero() {
		t.Errorf("read back %+v", got)
	}
	// A missing reference rolls the whole batch back.
	missing := rpath(t, "missing")
	err = d.RegisterValidPaths(ctx, []*PathInfo{info(c), info(rpath(t, "d"), missing)}, noPath, nil)
	if !errors.Is(err, ErrNotValid) || !strings.Contains(err.Error(), "path '"+missing.String()+"' is not valid") {
		t.Errorf("missing reference: %v", err)
	}
	if ok, _ := d.IsValid(ctx, c); ok {
		t.Error("a failed batch left a path valid")
	}
	// Cycles are refused.
	x, y := rpath(t, "x"), rpath(t, "y")
	if err := d.RegisterValidPaths(ctx, []*PathInfo{info(x, y), info(y, x)}, noPath, nil); err == nil || !strings.Contains(err.Error(), "cycle detected in the references of") {
		t.Errorf("cycle: %v", err)
	}
	// A false content-address claim is refused.
	bad := info(rpath(t, "bad"))
	bad.CA = "fixed:sha256:" + hash.Sum(hash.SHA256, []byte("x")).Nix32()
	if err := d.RegisterValidPaths(ctx, []*PathInfo{bad}, noPath, nil); err == nil || !strings.Contains(err.Error(), "claims to be content-addressed but isn't") {
		t.Errorf("false CA: %v", err)
	}
	// A true one is kept, rendered as Nix renders it.
	h := hash.Sum(hash.SHA256, []byte("contents"))
	caP, _ := storepath.DefaultDir.MakeFixedOutputPath("f", false, h, nil, false)
	good := info(caP)
	good.CA = "fixed:sha256:" + h.Base16()
	if err := d.RegisterValidPaths(ctx, []*PathInfo{good}, noPath, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.QueryPathInfo(ctx, caP); got.CA != "fixed:sha256:"+h.Nix32() {
		t.Errorf("CA read back as %q", got.CA)
	}
	// Re-registering updates sigs, keeps the registration time.
	before, _ := d.QueryPathInfo(ctx, a)
	upd := info(a)
	upd.Sigs = []string{"k:sig"}
	upd.RegistrationTime = time.Unix(12345, 0)
	if err := d.RegisterValidPaths(ctx, []*PathInfo{upd}, noPath, nil); err != nil {
		t.Fatal(err)
	}
	after, _ := d.QueryPathInfo(ctx, a)
	if !after.RegistrationTime.Equal(before.RegistrationTime) || len(after.Sigs) != 1 {
		t.Errorf("update: %+v", after)
	}
	if err := d.AddSignatures(ctx, a, []string{"j:sig", "k:sig"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.QueryPathInfo(ctx, a); strings.Join(got.Sigs, " ") != "j:sig k:sig" {
		t.Errorf("signatures %v", got.Sigs)
	}
	// Referrers and checked invalidation.
	if refs, _ := d.QueryReferrers(ctx, a); len(refs) != 1 || refs[0] != b {
		t.Errorf("referrers of a: %v", refs)
	}
	err = d.InvalidatePathChecked(ctx, a)
	if !errors.Is(err, ErrPathInUse) || err.Error() != "cannot delete path '"+a.String()+"' because it is in use by '"+b.String()+"'" {
		t.Errorf("invalidating a path in use: %v", err)
	}
	if err := d.InvalidatePathsChecked(ctx, []storepath.Path{b, a}); err != nil {
		t.Fatal(err)
	}
	if all, _ := d.QueryAllValidPaths(ctx); len(all) != 1 || all[0] != caP {
		t.Errorf("left valid: %v", all)
	}
	if p, err := d.QueryPathFromHashPart(ctx, caP.HashPart()); err != nil || p != caP {
		t.Errorf("from hash part: %v %v", p, err)
	}
	if p, err := d.QueryPathFromHashPart(ctx, a.HashPart()); err != nil || !p.IsZero() {
		t.Errorf("from an unknown hash part: %v %v", p, err)
	}
	if _, err := d.QueryPathFromHashPart(ctx, "short"); err == nil {
		t.Error("a short hash part was accepted")
	}
}

func TestRegisterDerivation(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, t.TempDir(), false)
	drv, out := rpath(t, "x.drv"), rpath(t, "x")
	if err := d.RegisterValidPaths(ctx, []*PathInfo{info(drv)}, noPath, nil); err == nil || !strings.Contains(err.Error(), "no derivation reader") {
		t.Errorf("a .drv without a reader: %v", err)
	}
	read := func(_ context.Context, p storepath.Path, file string) (map[string]storepath.Path, error) {
		return map[string]storepath.Path{"out": out}, nil
	}
	if err := d.RegisterValidPaths(ctx, []*PathInfo{info(drv)}, noPath, read); err != nil {
		t.Fatal(err)
	}
	outs, err := d.QueryDerivationOutputs(ctx, drv)
	if err != nil || outs["out"] != out {
		t.Errorf("outputs %v, %v", outs, err)
	}
	if err := d.RegisterValidPaths(ctx, []*PathInfo{info(out)}, noPath, nil); err != nil {
		t.Fatal(err)
	}
	if ds, _ := d.QueryValidDerivers(ctx, out); len(ds) != 1 || ds[0] != drv {
		t.Errorf("valid derivers %v", ds)
	}
	if _, err := d.QueryDerivationOutputs(ctx, rpath(t, "y.drv")); !errors.Is(err, ErrNotValid) {
		t.Errorf("outputs of an invalid drv: %v", err)
	}
	// A reader that refuses the derivation rolls the registration back.
	refuse := func(context.Context, storepath.Path, string) (map[string]storepath.Path, error) {
		return nil, errors.New("derivation has incorrect output")
	}
	z := rpath(t, "z.drv")
	if err := d.RegisterValidPaths(ctx, []*PathInfo{info(z)}, noPath, refuse); err == nil {
		t.Error("refused derivation registered")
	}
	if ok, _ := d.IsValid(ctx, z); ok {
		t.Error("refused derivation valid")
	}
}

func TestRealisations(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if d := openTest(t, dir, false); d.HasCA() {
		t.Fatal("CA tables without ca-derivations")
	} else {
		d.Close() // creating the CA tables needs the big lock exclusively
	}
	d := openTest(t, dir, true)
	if b, _ := os.ReadFile(filepath.Join(dir, "ca-schema")); string(b) != "3" {
		t.Errorf("ca-schema %q", b)
	}
	out, dep := rpath(t, "out"), rpath(t, "dep")
	d.RegisterValidPaths(ctx, []*PathInfo{info(out), info(dep)}, noPath, nil)
	depID := DrvOutput{Hash: hash.Sum(hash.SHA256, []byte("dep")), Output: "out"}
	id := DrvOutput{Hash: hash.Sum(hash.SHA256, []byte("drv")), Output: "out"}
	if err := d.RegisterRealisation(ctx, &Realisation{ID: id, OutPath: out, DependentRealisations: map[DrvOutput]storepath.Path{depID: dep}}); err == nil {
		t.Error("registered with a missing dependency")
	}
	if err := d.RegisterRealisation(ctx, &Realisation{ID: depID, OutPath: dep, Signatures: []string{"a:1"}}); err != nil {
		t.Fatal(err)
	}
	r := &Realisation{ID: id, OutPath: out, Signatures: []string{"b:2"}, DependentRealisations: map[DrvOutput]storepath.Path{depID: dep}}
	if err := d.RegisterRealisation(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Signatures = []string{"c:3"}
	if err := d.RegisterRealisation(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := d.QueryRealisation(ctx, id)
	if err != nil || got == nil || got.OutPath != out || strings.Join(got.Signatures, " ") != "b:2 c:3" || got.DependentRealisations[depID] != dep {
		t.Fatalf("read back %+v, %v", got, err)
	}
	if err := d.RegisterRealisation(ctx, &Realisation{ID: id, OutPath: dep}); err == nil || !strings.Contains(err.Error(), "we already have another one locally") {
		t.Errorf("conflicting realisation: %v", err)
	}
	if s := id.String(); !strings.HasPrefix(s, "sha256:") || !strings.HasSuffix(s, "!out") {
		t.Errorf("DrvOutput %q", s)
	}
	if p, err := ParseDrvOutput(id.String()); err != nil || p != id {
		t.Errorf("parse %v %v", p, err)
	}
}

// TestUpgrade opens a schema 8 database (Nix 1.x-era, with FailedPaths
// and without ca) and checks it is brought to schema 10.
func TestUpgrade(t *testing.T) {
	dir := t.TempDir()
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = raw.Exec(`create table ValidPaths (id integer primary key autoincrement not null, path text unique not null,
		hash text not null, registrationTime integer not null, deriver text, narSize integer, ultimate integer, sigs text);
		create table Refs (referrer integer not null, reference integer not null, primary key (referrer, reference));
		create table DerivationOutputs (drv integer not null, id text not null, path text not null, primary key (drv, id));
		create table FailedPaths (path text primary key not null, time integer not null);
		insert into ValidPaths (path, hash, registrationTime) values ('/nix/store/00000000000000000000000000000000-old', 'sha256:` + strings.Repeat("0", 64) + `', 1);`)
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "schema"), []byte("8"), 0o644)
	d := openTest(t, dir, false)
	if b, _ := os.ReadFile(filepath.Join(dir, "schema")); string(b) != "10" {
		t.Errorf("schema file %q after upgrade", b)
	}
	old, _ := storepath.DefaultDir.Parse("/nix/store/00000000000000000000000000000000-old")
	if got, err := d.QueryPathInfo(context.Background(), old); err != nil || got.CA != "" {
		t.Errorf("old path after upgrade: %+v, %v", got, err)
	}
	var n int
	d.db.QueryRow(`select count(*) from sqlite_master where name = 'FailedPaths'`).Scan(&n)
	if n != 0 {
		t.Error("FailedPaths still there")
	}
	if _, err := Open(context.Background(), Options{StoreDir: storepath.DefaultDir, Dir: t.TempDir() + "/missing"}); err == nil {
		t.Error("opened a database in a missing directory")
	}
}

// TestBusyRetry holds a write transaction on one connection while another
// writes: the second waits (retrying) and succeeds once the first ends.
func TestBusyRetry(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openTest(t, dir, false)
	b := openTest(t, dir, false)
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx.Exec(`insert into ValidPaths (path, hash, registrationTime) values ('/nix/store/11111111111111111111111111111111-held', 'sha256:x', 1)`)
	done := make(chan error, 1)
	p := rpath(t, "waiting")
	go func() { done <- b.RegisterValidPaths(ctx, []*PathInfo{info(p)}, noPath, nil) }()
	select {
	case err := <-done:
		t.Fatalf("wrote while another connection held the write lock: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	tx.Commit()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A cancelled wait gives up.
	tx, _ = a.db.BeginTx(ctx, nil)
	tx.Exec(`delete from ValidPaths where path = '/nix/store/11111111111111111111111111111111-held'`)
	cctx, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
	defer cancel()
	if err := b.RegisterValidPaths(cctx, []*PathInfo{info(rpath(t, "never"))}, noPath, nil); err == nil {
		t.Error("wrote through a held lock after cancelling")
	}
	tx.Rollback()
}

// FuzzParseDrvOutput: what parses prints back to what Nix would print.
func FuzzParseDrvOutput(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("ab", 32) + "!out")
	f.Add("sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s!dev")
	f.Add("!out")
	f.Add("md5:x!")
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseDrvOutput(s)
		if err != nil {
			return
		}
		back, err := ParseDrvOutput(o.String())
		if err != nil || back != o {
			t.Fatalf("%q -> %v -> %q: %v %v", s, o, o.String(), back, err)
		}
	})
}
