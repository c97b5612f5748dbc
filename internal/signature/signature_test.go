package signature

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nixtest"
)

// A key pair written by the real nix-store --generate-binary-cache-key.
const (
	nixSecret = "test-1:lvZtSYxY5CpEy31AgmFPOGuXBOx+bEy5KFzRQg8i/4Dbkr66imz+3LzVcLPHEqJS3s7i/RvhepROT+aKc0dUFQ=="
	nixPublic = "test-1:25K+uops/ty81XCzxxKiUt7O4v0b4XqUTk/minNHVBU="
	// nix store sign --key-file (nixSecret) on the path below.
	nixFingerprint = "1;/nix/store/mg4zppskv7qbwhnzr2m8lfg344s8nkad-x;sha256:15yd2874divji6h2k302wl1bi5r6c4g2ahf8l8p9wb70sa2j8kls;216;" +
		"/nix/store/rqixwfyz9mxmf0anjbi9ib9fa6fbclcp-.bashrc,/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f"
	nixSig = "test-1:c7AEMKnoWlryQXuN8BsU0W53DzHH5UhmC8F3X8cgbEzGFgi3mu4TQpcxQA03csrhnGVfVgKRGgM+jyf88fpHAQ=="
)

func mustSecret(t testing.TB, s string) SecretKey {
	t.Helper()
	k, err := ParseSecretKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKnownVectors(t *testing.T) {
	sk := mustSecret(t, nixSecret)
	if got := sk.String(); got != nixSecret {
		t.Errorf("secret key round trip: got %q", got)
	}
	if got := sk.Public().String(); got != nixPublic {
		t.Errorf("public key: got %q, want %q", got, nixPublic)
	}
	sig := sk.Sign(nixFingerprint)
	if sig.String() != nixSig {
		t.Errorf("signature: got %s, want Nix's %s", sig, nixSig)
	}
	pk, err := ParsePublicKey(nixPublic + "\n")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseSignature(nixSig)
	if err != nil {
		t.Fatal(err)
	}
	if !parsed.Equal(sig) || parsed.String() != nixSig {
		t.Errorf("ParseSignature round trip: %s", parsed)
	}
	if !pk.Verify(nixFingerprint, parsed) {
		t.Error("Nix's signature does not verify")
	}
	if pk.Verify(nixFingerprint+"x", parsed) {
		t.Error("signature verifies another fingerprint")
	}
	other, err := GenerateKey("test-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if other.Public().Verify(nixFingerprint, parsed) {
		t.Error("another key of the same name verifies the signature")
	}
	renamed := Signature{KeyName: "test-2", Bytes: parsed.Bytes}
	if pk.Verify(nixFingerprint, renamed) {
		t.Error("signature under another key name verifies")
	}
}

func TestKeySet(t *testing.T) {
	a, b := genKey(t, "a-1"), genKey(t, "b-1")
	imposter := genKey(t, "a-1")
	const fp = "1;/nix/store/x;sha256:0;1;"
	ks, err := ParseKeySet("  " + a.Public().String() + "\n\t" + b.Public().String() + " " + imposter.Public().String() + " ")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ks.String(), a.Public().String()+" "+b.Public().String(); got != want {
		t.Errorf("KeySet (first key of a name wins): got %q, want %q", got, want)
	}
	tests := []struct {
		name string
		sigs []Signature
		want bool
	}{
		{"none", nil, false},
		{"a", []Signature{a.Sign(fp)}, true},
		{"b after untrusted", []Signature{genKey(t, "c-1").Sign(fp), b.Sign(fp)}, true},
		{"imposter with trusted name", []Signature{imposter.Sign(fp)}, false},
		{"other fingerprint", []Signature{a.Sign(fp + "x")}, false},
		{"truncated", []Signature{{KeyName: "a-1", Bytes: a.Sign(fp).Bytes[:10]}}, false},
	}
	for _, tt := range tests {
		if got := ks.Verify(fp, tt.sigs); got != tt.want {
			t.Errorf("%s: Verify = %v, want %v", tt.name, got, tt.want)
		}
	}
	var nilSet *KeySet
	if nilSet.Verify(fp, []Signature{a.Sign(fp)}) || NewKeySet().Verify(fp, []Signature{a.Sign(fp)}) {
		t.Error("an empty key set trusts a signature")
	}
	if _, err := ParseKeySet(a.Public().String() + " bogus"); err == nil {
		t.Error("ParseKeySet accepted a bad key")
	}
}

func genKey(t testing.TB, name string) SecretKey {
	t.Helper()
	k, err := GenerateKey(name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseErrors(t *testing.T) {
	pub := strings.TrimPrefix(nixPublic, "test-1:")
	sec := strings.TrimPrefix(nixSecret, "test-1:")
	sig := strings.TrimPrefix(nixSig, "test-1:")
	corrupt := []byte(mustSecret(t, nixSecret).key)
	corrupt[40] ^= 1 // public half no longer matches the seed
	tests := []struct {
		name  string
		parse func(string) error
		in    string
	}{
		{"public: empty", parsePub, ""},
		{"public: no colon", parsePub, pub},
		{"public: empty name", parsePub, ":" + pub},
		{"public: name with space", parsePub, "a b:" + pub},
		{"public: bad base64", parsePub, "k:" + pub[:10] + "!" + pub[11:]},
		{"public: secret key", parsePub, nixSecret},
		{"public: short", parsePub, "k:AAAA"},
		{"public: empty key", parsePub, "k:"},
		{"secret: public key", parseSec, nixPublic},
		{"secret: two lines", parseSec, nixSecret + "\n" + nixSecret},
		{"secret: no name", parseSec, sec},
		{"secret: corrupt public half", parseSec, "k:" + Signature{Bytes: corrupt}.String()[1:]},
		{"signature: empty", parseSig, ""},
		{"signature: no name", parseSig, ":" + sig},
		{"signature: short", parseSig, "k:" + sig[:40]},
		{"signature: padding in the middle", parseSig, "k:AA==" + sig[4:]},
		{"signature: trailing space", parseSig, nixSig + " "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(tt.in)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("parse %q: got %v, want ErrInvalid", tt.in, err)
			}
		})
	}
	// Tolerated: surrounding whitespace on keys, missing base64 padding.
	for _, s := range []string{" " + nixPublic + "\n", strings.TrimRight(nixPublic, "=")} {
		if err := parsePub(s); err != nil {
			t.Errorf("ParsePublicKey(%q): %v", s, err)
		}
	}
	if _, err := GenerateKey("bad:name", rand.Reader); err == nil {
		t.Error("GenerateKey accepted a name with ':'")
	}
}

func parsePub(s string) error { _, err := ParsePublicKey(s); return err }
func parseSec(s string) error { _, err := ParseSecretKey(s); return err }
func parseSig(s string) error { _, err := ParseSignature(s); return err }

func TestLoadSecretKeyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(nixSecret+"\n"), 0o600)
	k, err := LoadSecretKeyFile(good)
	if err != nil || k.String() != nixSecret {
		t.Fatalf("LoadSecretKeyFile: %v, %v", k, err)
	}
	pubFile := filepath.Join(dir, "pub")
	os.WriteFile(pubFile, []byte(nixPublic), 0o644)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte("a"), maxKeyFile+1), 0o600)
	for _, p := range []string{filepath.Join(dir, "missing"), pubFile, big, dir} {
		_, err := LoadSecretKeyFile(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("LoadSecretKeyFile(%s): error %v does not name the file", p, err)
		}
	}
}

// pathInfo is what the test needs of nix path-info --json.
type pathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    uint64   `json:"narSize"`
	References []string `json:"references"`
	Signatures []string `json:"signatures"`
}

func queryPathInfo(t *testing.T, n *nixtest.Nix, p string) pathInfo {
	t.Helper()
	var infos []pathInfo
	if err := json.Unmarshal([]byte(n.Run("nix", "path-info", "--json", p)), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("nix path-info --json %s: %v", p, err)
	}
	return infos[0]
}

// fingerprint is built here from Nix's own path-info, independently of
// package narinfo.
func (pi pathInfo) fingerprint(t *testing.T) string {
	h, err := hash.Parse(pi.NarHash)
	if err != nil {
		t.Fatal(err)
	}
	return "1;" + pi.Path + ";" + h.String() + ";" + strconv.FormatUint(pi.NarSize, 10) + ";" + strings.Join(pi.References, ",")
}

func (pi pathInfo) sigsBy(name string) []string {
	var out []string
	for _, s := range pi.Signatures {
		if strings.HasPrefix(s, name+":") {
			out = append(out, s)
		}
	}
	return out
}

// TestWithNix checks keys and signatures both ways with the real Nix, on
// freshly built input-addressed paths with references.
func TestWithNix(t *testing.T) {
	n := nixtest.Require(t)
	dir := t.TempDir()
	dep := n.Build("sigdep", `echo dep > $out`)
	path := n.Build("sigtest", `echo $dep0 > $out`, dep)

	// A key made by silo: Nix signs with it, silo's signature is identical
	// and Nix verifies with silo's public key.
	siloKey := genKey(t, "silo-test-1")
	siloSec, siloPub := filepath.Join(dir, "silo.sec"), filepath.Join(dir, "silo.pub")
	os.WriteFile(siloSec, []byte(siloKey.String()), 0o600)
	os.WriteFile(siloPub, []byte(siloKey.Public().String()), 0o644)
	n.Run("nix", "store", "sign", "--key-file", siloSec, path)

	// A key made by Nix, loaded by silo.
	nixSec, nixPub := filepath.Join(dir, "nix.sec"), filepath.Join(dir, "nix.pub")
	n.Run("nix-store", "--generate-binary-cache-key", "nix-test-1", nixSec, nixPub)
	nixKey, err := LoadSecretKeyFile(nixSec)
	if err != nil {
		t.Fatal(err)
	}
	pubText, _ := os.ReadFile(nixPub)
	if got := nixKey.Public().String(); got != string(pubText) {
		t.Errorf("public key of Nix's secret key: silo %q, Nix %q", got, pubText)
	}
	n.Run("nix", "store", "sign", "--key-file", nixSec, path)

	pi := queryPathInfo(t, n, path)
	if len(pi.References) != 1 || pi.References[0] != dep {
		t.Fatalf("%s has references %v, want [%s]", path, pi.References, dep)
	}
	fp := pi.fingerprint(t)
	trusted := NewKeySet(siloKey.Public(), nixKey.Public())
	for _, k := range []SecretKey{siloKey, nixKey} {
		nixSigs := pi.sigsBy(k.Name())
		if diff := cmp.Diff([]string{k.Sign(fp).String()}, nixSigs); diff != "" {
			t.Errorf("key %s: silo's signature differs from Nix's (-silo +nix):\n%s", k.Name(), diff)
			continue
		}
		sig, err := ParseSignature(nixSigs[0])
		if err != nil {
			t.Fatal(err)
		}
		if !k.Public().Verify(fp, sig) || !trusted.Verify(fp, []Signature{sig}) {
			t.Errorf("key %s: silo does not verify Nix's signature", k.Name())
		}
	}

	// Nix accepts silo's public key format and rejects a wrong key.
	n.Run("nix", "store", "verify", "--no-contents", "--trusted-public-keys", siloKey.Public().String(), "--sigs-needed", "1", path)
	wrong := genKey(t, "silo-test-1")
	if _, err := n.Try("nix", "store", "verify", "--no-contents", "--trusted-public-keys", wrong.Public().String(), "--sigs-needed", "1", path); err == nil {
		t.Error("nix store verify accepted a signature under a wrong key of the same name")
	}
	var sigs []Signature
	for _, s := range pi.Signatures {
		sig, err := ParseSignature(s)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, sig)
	}
	if NewKeySet(wrong.Public()).Verify(fp, sigs) {
		t.Error("silo accepted a signature under a wrong key of the same name")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{nixSecret, nixPublic, nixSig, "k:", ":", "a b:AAAA", strings.TrimRight(nixSig, "=")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if sig, err := ParseSignature(s); err == nil {
			again, err := ParseSignature(sig.String())
			if err != nil || !again.Equal(sig) {
				t.Fatalf("signature %q: round trip gave %v, %v", s, again, err)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
		if k, err := ParsePublicKey(s); err == nil {
			again, err := ParsePublicKey(k.String())
			if err != nil || !again.Equal(k) {
				t.Fatalf("public key %q: round trip gave %v, %v", s, again, err)
			}
		}
		if k, err := ParseSecretKey(s); err == nil {
			again, err := ParseSecretKey(k.String())
			if err != nil || again.String() != k.String() {
				t.Fatalf("secret key %q: round trip gave %v, %v", s, again, err)
			}
			if sig := k.Sign(s); !k.Public().Verify(s, sig) {
				t.Fatalf("secret key %q: own signature does not verify", s)
			}
		}
	})
}
