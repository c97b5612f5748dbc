// Package signature holds ed25519 keys and signatures in Nix's text forms.
//
// A secret key is "name:base64(64-byte ed25519 private key)", a public key
// "name:base64(32 bytes)", a signature "name:base64(64 bytes)", exactly as
// Nix 2.8 writes them (nix-store --generate-binary-cache-key, nix store
// sign). A signature is checked only against the trusted key of the same
// name. Key names are non-empty and contain neither ':' nor whitespace
// (trusted-public-keys is a space-separated list). Values of every type are
// immutable once parsed or generated.
package signature

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
)

// ErrInvalid is wrapped by every error about a malformed key or signature.
var ErrInvalid = errors.New("invalid key or signature")

// Signature is a detached ed25519 signature by the key named KeyName.
type Signature struct {
	KeyName string
	Bytes   []byte // ed25519.SignatureSize bytes
}

// ParseSignature parses "name:base64".
func ParseSignature(s string) (Signature, error) {
	name, raw, err := split("signature", s, ed25519.SignatureSize)
	if err != nil {
		return Signature{}, err
	}
	return Signature{KeyName: name, Bytes: raw}, nil
}

// String returns "name:base64", as Nix writes it in a narinfo's Sig field.
func (s Signature) String() string {
	return s.KeyName + ":" + base64.StdEncoding.EncodeToString(s.Bytes)
}

// Equal reports whether s and o are the same signature.
func (s Signature) Equal(o Signature) bool {
	return s.KeyName == o.KeyName && bytes.Equal(s.Bytes, o.Bytes)
}

// SecretKey is a named ed25519 private key.
type SecretKey struct {
	name string
	key  ed25519.PrivateKey
}

// GenerateKey makes a new key named name from rand (crypto/rand.Reader
// unless testing). Names conventionally end in a generation number:
// "cache.example.org-1".
func GenerateKey(name string, rand io.Reader) (SecretKey, error) {
	if err := ValidateKeyName(name); err != nil {
		return SecretKey{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return SecretKey{}, fmt.Errorf("generate key %q: %w", name, err)
	}
	return SecretKey{name: name, key: priv}, nil
}

// ParseSecretKey parses "name:base64", ignoring surrounding whitespace (a
// key file's final newline). The key's public half must match its seed.
func ParseSecretKey(s string) (SecretKey, error) {
	name, raw, err := split("secret key", strings.TrimSpace(s), ed25519.PrivateKeySize)
	if err != nil {
		return SecretKey{}, err
	}
	key := ed25519.PrivateKey(raw)
	if !bytes.Equal(ed25519.NewKeyFromSeed(key.Seed()), key) {
		return SecretKey{}, fmt.Errorf("%w: secret key %q: its public half does not match its seed (corrupt key)", ErrInvalid, name)
	}
	return SecretKey{name: name, key: key}, nil
}

// Name returns the key's name.
func (k SecretKey) Name() string { return k.name }

// String returns "name:base64", the contents of a secret key file.
func (k SecretKey) String() string {
	return k.name + ":" + base64.StdEncoding.EncodeToString(k.key)
}

// Public returns the matching public key.
func (k SecretKey) Public() PublicKey {
	return PublicKey{name: k.name, key: k.key.Public().(ed25519.PublicKey)}
}

// Sign signs fingerprint. Ed25519 is deterministic: the same key and
// fingerprint always give the same signature, as with Nix.
func (k SecretKey) Sign(fingerprint string) Signature {
	return Signature{KeyName: k.name, Bytes: ed25519.Sign(k.key, []byte(fingerprint))}
}

// PublicKey is a named ed25519 public key.
type PublicKey struct {
	name string
	key  ed25519.PublicKey
}

// ParsePublicKey parses "name:base64", ignoring surrounding whitespace.
func ParsePublicKey(s string) (PublicKey, error) {
	name, raw, err := split("public key", strings.TrimSpace(s), ed25519.PublicKeySize)
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKey{name: name, key: raw}, nil
}

// Name returns the key's name.
func (k PublicKey) Name() string { return k.name }

// String returns "name:base64", as trusted-public-keys lists it.
func (k PublicKey) String() string {
	return k.name + ":" + base64.StdEncoding.EncodeToString(k.key)
}

// Equal reports whether k and o are the same named key.
func (k PublicKey) Equal(o PublicKey) bool { return k.name == o.name && bytes.Equal(k.key, o.key) }

// Verify reports whether sig is k's valid signature of fingerprint. A
// signature by a key of another name is never valid.
func (k PublicKey) Verify(fingerprint string, sig Signature) bool {
	return len(k.key) == ed25519.PublicKeySize && sig.KeyName == k.name &&
		len(sig.Bytes) == ed25519.SignatureSize && ed25519.Verify(k.key, []byte(fingerprint), sig.Bytes)
}

// KeySet is a set of trusted public keys, at most one per name. The zero
// KeySet and a nil *KeySet trust nothing.
type KeySet struct {
	byName map[string]PublicKey
	order  []string
}

// NewKeySet returns a set of keys. Of several keys with one name, the first
// wins, as in Nix.
func NewKeySet(keys ...PublicKey) *KeySet {
	ks := &KeySet{byName: make(map[string]PublicKey, len(keys))}
	for _, k := range keys {
		ks.add(k)
	}
	return ks
}

func (ks *KeySet) add(k PublicKey) {
	if _, dup := ks.byName[k.name]; dup {
		return
	}
	ks.byName[k.name] = k
	ks.order = append(ks.order, k.name)
}

// ParseKeySet parses a whitespace-separated list of public keys, the
// format of Nix's trusted-public-keys setting.
func ParseKeySet(s string) (*KeySet, error) {
	ks := NewKeySet()
	for i, f := range strings.Fields(s) {
		k, err := ParsePublicKey(f)
		if err != nil {
			return nil, fmt.Errorf("public key %d of the list: %w", i+1, err)
		}
		ks.add(k)
	}
	return ks, nil
}

// Keys returns the keys in the order they were first added.
func (ks *KeySet) Keys() []PublicKey {
	if ks == nil {
		return nil
	}
	out := make([]PublicKey, len(ks.order))
	for i, n := range ks.order {
		out[i] = ks.byName[n]
	}
	return out
}

// Lookup returns the trusted key named name.
func (ks *KeySet) Lookup(name string) (PublicKey, bool) {
	if ks == nil {
		return PublicKey{}, false
	}
	k, ok := ks.byName[name]
	return k, ok
}

// String returns the keys space-separated, as ParseKeySet reads them.
func (ks *KeySet) String() string {
	var parts []string
	for _, k := range ks.Keys() {
		parts = append(parts, k.String())
	}
	return strings.Join(parts, " ")
}

// Verify reports whether any of sigs is a valid signature of fingerprint
// by a trusted key.
func (ks *KeySet) Verify(fingerprint string, sigs []Signature) bool {
	for _, sig := range sigs {
		if k, ok := ks.Lookup(sig.KeyName); ok && k.Verify(fingerprint, sig) {
			return true
		}
	}
	return false
}

// ValidateKeyName checks a key name: non-empty, without ':' or whitespace.
func ValidateKeyName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty key name", ErrInvalid)
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		return fmt.Errorf("%w: key name %q contains %q (names may not contain ':' or whitespace; e.g. cache.example.org-1)", ErrInvalid, name, name[i])
	}
	return nil
}

// split parses "name:base64" whose base64 (padded or not) decodes to size bytes.
func split(what, s string, size int) (string, []byte, error) {
	name, b64, ok := strings.Cut(s, ":")
	if !ok {
		return "", nil, fmt.Errorf("%w: %s has no ':' (want NAME:BASE64)", ErrInvalid, what)
	}
	if err := ValidateKeyName(name); err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	enc := base64.StdEncoding
	if len(b64)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	raw, err := enc.Strict().DecodeString(b64)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s %q: bad base64: %v", ErrInvalid, what, name, err)
	}
	if len(raw) != size {
		return "", nil, fmt.Errorf("%w: %s %q has %d bytes, want %d", ErrInvalid, what, name, len(raw), size)
	}
	return name, raw, nil
}

// maxKeyFile bounds what LoadSecretKeyFile reads: a key is ~100 bytes.
const maxKeyFile = 64 << 10

// LoadSecretKeyFile reads a secret key file as written by "silo key
// generate" or "nix-store --generate-binary-cache-key".
func LoadSecretKeyFile(path string) (SecretKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return SecretKey{}, fmt.Errorf("read secret key: %w (create one with: silo key generate NAME --secret %s --public FILE)", err, path)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return SecretKey{}, fmt.Errorf("read secret key %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return SecretKey{}, fmt.Errorf("secret key file %s: longer than %d bytes, not a key (want one line NAME:BASE64)", path, maxKeyFile)
	}
	k, err := ParseSecretKey(string(data))
	if err != nil {
		return SecretKey{}, fmt.Errorf("secret key file %s: %w (want one line NAME:BASE64 as written by silo key generate or nix-store --generate-binary-cache-key; is it the public key?)", path, err)
	}
	return k, nil
}
