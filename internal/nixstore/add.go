package nixstore

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// CAMethod is how content is addressed when added by its content: Nix's
// ContentAddressMethod with its hash algorithm, as the worker protocol
// spells it ("text:sha256", "fixed:sha1", "fixed:r:sha256").
type CAMethod struct {
	Text      bool // text:sha256: a text file, hashed flat (builtins.toFile, .drv)
	Recursive bool // fixed:r:<algo>: the NAR is hashed; else fixed:<algo>: a flat file
	Algo      hash.Algo
}

// ParseCAMethod parses a content-address method as Nix's
// parseContentAddressMethod.
func ParseCAMethod(s string) (CAMethod, error) {
	prefix, rest, ok := strings.Cut(s, ":")
	if !ok {
		return CAMethod{}, fmt.Errorf("not a content address because it is not in the form '<prefix>:<rest>': %s", s)
	}
	var m CAMethod
	switch prefix {
	case "text":
		m.Text = true
	case "fixed":
		if r, ok := strings.CutPrefix(rest, "r:"); ok {
			m.Recursive, rest = true, r
		}
	default:
		return CAMethod{}, fmt.Errorf("content address prefix '%s' is unrecognized. Recogonized prefixes are 'text' or 'fixed'", prefix)
	}
	a, err := hash.ParseAlgo(rest)
	if err != nil {
		return CAMethod{}, fmt.Errorf("content address method %q: %w", s, err)
	}
	if m.Text && a != hash.SHA256 {
		return CAMethod{}, fmt.Errorf("text content address hash should use sha256, but instead uses %s", a)
	}
	m.Algo = a
	return m, nil
}

// String renders m as the worker protocol does.
func (m CAMethod) String() string {
	switch {
	case m.Text:
		return "text:" + m.Algo.String()
	case m.Recursive:
		return "fixed:r:" + m.Algo.String()
	}
	return "fixed:" + m.Algo.String()
}

// AddOptions modify an addition. The zero value adds without repair,
// without checking signatures and without optimising.
type AddOptions struct {
	// Repair replaces the path's contents even if it is valid.
	Repair bool
	// CheckSigs refuses (when the store's RequireSigs is set) a path that
	// is neither content-addressed nor signed by a trusted key. The daemon
	// sets it for untrusted clients and unless a trusted one says
	// dontCheckSigs.
	CheckSigs bool
	// Optimise hard-links the new files into .links (auto-optimise-store).
	Optimise bool
	// TrustedKeys, if not nil, replace the store's TrustedKeys for
	// CheckSigs: Nix computes the keys on first use, after a trusted
	// client's SetOptions may have changed trusted-public-keys.
	TrustedKeys *signature.KeySet
}

// AddToStoreNar adds info.Path with the contents of a NAR, as Nix's
// LocalStore::addToStore: the NAR is read strictly and exactly (nothing
// after its end is read, so src may continue with other data; src may
// also be left unread if the path is already valid: the caller drains
// it), its SHA-256 and size must be info's ("hash mismatch importing path
// ...", "size mismatch importing path ..."), a content address info claims
// must hold ("ca hash mismatch importing path ..."), and info's references
// must be valid. Nothing becomes valid, and nothing is left in the store,
// unless all of that holds. src should be buffered: it is read in small
// pieces.
func (s *Store) AddToStoreNar(ctx context.Context, info *PathInfo, src io.Reader, o AddOptions) error {
	info, ca, err := s.checkInfo(info)
	if err != nil {
		return err
	}
	if o.CheckSigs && s.opts.RequireSigs {
		keys := s.opts.TrustedKeys
		if o.TrustedKeys != nil {
			keys = o.TrustedKeys
		}
		if err := checkSigs(info, keys); err != nil {
			return err
		}
	}
	if err := s.AddTempRoot(ctx, info.Path); err != nil {
		return err
	}
	return s.withPathLock(ctx, info.Path, o.Repair, func() error {
		if err := s.checkRefs(ctx, info); err != nil {
			return err
		}
		s.autoGC(ctx)
		narHash := hash.NewWriter(hash.SHA256)
		var sink io.Writer = narHash
		var caHash *hashModulo
		var textHash *hash.Writer
		var rootContents io.Writer
		switch {
		case ca == nil:
		case ca.Text:
			textHash = hash.NewWriter(hash.SHA256)
			rootContents = textHash
		case ca.Recursive:
			caHash = newHashModulo(ca.Hash.Algo(), info.Path.HashPart())
			sink = io.MultiWriter(narHash, caHash)
		default:
			caHash = newHashModulo(ca.Hash.Algo(), info.Path.HashPart())
			rootContents = caHash
		}
		nr := nar.NewExactReader(io.TeeReader(src, sink))
		tmp, isFile, err := s.restoreTemp(ctx, info.Path.Name(), nr, rootContents)
		if err != nil {
			return fmt.Errorf("importing path '%s': %w", info.Path, err)
		}
		fail := func(err error) error {
			DeletePath(tmp)
			return err
		}
		if got := narHash.Sum(); got != info.NarHash {
			return fail(fmt.Errorf("hash mismatch importing path '%s';\n  specified: %s\n  got:       %s", info.Path, info.NarHash, got))
		}
		if got := narHash.Size(); got != info.NarSize {
			return fail(fmt.Errorf("size mismatch importing path '%s';\n  specified: %d\n  got:       %d", info.Path, info.NarSize, got))
		}
		if ca != nil {
			if (ca.Text || !ca.Recursive) && !isFile {
				return fail(fmt.Errorf("ca hash mismatch importing path '%s': it claims a flat content address (%s) but is not a regular file", info.Path, info.CA))
			}
			var got hash.Hash
			if ca.Text {
				got = textHash.Sum()
			} else {
				got = caHash.Sum()
			}
			if got != ca.Hash {
				return fail(fmt.Errorf("ca hash mismatch importing path '%s';\n  specified: %s\n  got:       %s", info.Path, ca.Hash, got))
			}
		}
		return s.install(ctx, tmp, info, o)
	})
}

// AddToStoreFromDump adds content by its content address, as Nix's
// addToStoreFromDump (and addTextToStore for the text method): dump is a
// NAR for recursive methods (read exactly, as by AddToStoreNar: dump
// should be buffered), else the file's bytes, up to its end. The
// path is computed from the hash, name and references (which must be
// valid); the returned info is the path's, as registered.
func (s *Store) AddToStoreFromDump(ctx context.Context, dump io.Reader, name string, m CAMethod, refs []storepath.Path, o AddOptions) (*PathInfo, error) {
	if err := storepath.ValidateName(name); err != nil {
		return nil, fmt.Errorf("adding '%s' to the store: %w", name, err)
	}
	if m.Algo.Size() == 0 {
		return nil, fmt.Errorf("adding '%s' to the store: no hash algorithm given", name)
	}
	refs = slices.Clone(refs)
	slices.SortFunc(refs, storepath.Compare)
	refs = slices.Compact(refs)
	if (!m.Text && !(m.Recursive && m.Algo == hash.SHA256)) && len(refs) > 0 {
		return nil, fmt.Errorf("adding '%s' to the store: only text and recursive sha256 content may have references", name)
	}
	if err := s.checkRefs(ctx, &PathInfo{References: refs}); err != nil {
		return nil, err
	}
	s.autoGC(ctx)
	caHash := hash.NewWriter(m.Algo)
	var tmp string
	var narHash hash.Hash
	var narSize uint64
	var err error
	if m.Recursive {
		var sink io.Writer = caHash
		var nh *hash.Writer
		if m.Algo != hash.SHA256 {
			nh = hash.NewWriter(hash.SHA256)
			sink = io.MultiWriter(caHash, nh)
		}
		// Read exactly the NAR, as for AddToStoreNar: callers may pass a
		// stream that goes on (the pre-1.25 protocol's inline NARs).
		nr := nar.NewExactReader(io.TeeReader(dump, sink))
		tmp, _, err = s.restoreTemp(ctx, name, nr, nil)
		if err != nil {
			return nil, fmt.Errorf("adding '%s' to the store: %w", name, err)
		}
		if nh == nil {
			nh = caHash
		}
		narHash, narSize = nh.Sum(), nh.Size()
	} else {
		tmp, err = s.writeTemp(ctx, name, io.TeeReader(dump, caHash))
		if err != nil {
			return nil, fmt.Errorf("adding '%s' to the store: %w", name, err)
		}
		if narHash, narSize, err = narHashFile(tmp); err != nil {
			DeletePath(tmp)
			return nil, fmt.Errorf("adding '%s' to the store: %w", name, err)
		}
	}
	ca := narinfo.CA{Text: m.Text, Recursive: m.Recursive, Hash: caHash.Sum()}
	p, err := ca.Path(s.opts.StoreDir, name, refs, storepath.Path{})
	if err != nil {
		DeletePath(tmp)
		return nil, fmt.Errorf("adding '%s' to the store: %w", name, err)
	}
	info := &PathInfo{Path: p, NarHash: narHash, NarSize: narSize, References: refs, CA: ca.String()}
	registered := false
	err = s.AddTempRoot(ctx, p)
	if err == nil {
		err = s.withPathLock(ctx, p, o.Repair, func() error {
			info.RegistrationTime = time.Unix(time.Now().Unix(), 0)
			err := s.install(ctx, tmp, info, o)
			tmp, registered = "", err == nil
			return err
		})
	}
	if tmp != "" {
		DeletePath(tmp)
	}
	if err != nil {
		return nil, err
	}
	if registered {
		return info, nil
	}
	return s.db.QueryPathInfo(ctx, p)
}

// checkInfo validates and normalises a PathInfo a client sent.
func (s *Store) checkInfo(in *PathInfo) (*PathInfo, *narinfo.CA, error) {
	info := *in
	if info.Path.Dir() != s.opts.StoreDir {
		return nil, nil, fmt.Errorf("path '%s' is not in the Nix store %s", info.Path, s.opts.StoreDir)
	}
	if info.NarHash.Algo() != hash.SHA256 {
		return nil, nil, fmt.Errorf("cannot add path '%s': its NAR hash must be sha256", info.Path)
	}
	if !info.Deriver.IsZero() && info.Deriver.Dir() != s.opts.StoreDir {
		return nil, nil, fmt.Errorf("cannot add path '%s': deriver '%s' is not in the Nix store", info.Path, info.Deriver)
	}
	info.References = slices.Clone(info.References)
	slices.SortFunc(info.References, storepath.Compare)
	info.References = slices.Compact(info.References)
	for _, r := range info.References {
		if r.Dir() != s.opts.StoreDir {
			return nil, nil, fmt.Errorf("cannot add path '%s': reference '%s' is not in the Nix store", info.Path, r)
		}
	}
	info.Sigs = slices.Clone(info.Sigs)
	slices.Sort(info.Sigs)
	info.Sigs = slices.Compact(info.Sigs)
	if info.CA == "" {
		return &info, nil, nil
	}
	ca, err := narinfo.ParseCA(info.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot add path '%s': %w", info.Path, err)
	}
	info.CA = ca.String()
	if !info.ContentAddressed() {
		return nil, nil, fmt.Errorf("cannot add path '%s' to the Nix store because it claims to be content-addressed but isn't", info.Path)
	}
	return &info, &ca, nil
}

// checkSigs refuses a path that is neither content-addressed nor signed
// by one of keys.
func checkSigs(info *PathInfo, keys *signature.KeySet) error {
	if info.ContentAddressed() {
		return nil
	}
	if info.NarSize == 0 {
		return fmt.Errorf("cannot calculate fingerprint of path '%s' because its size is not known", info.Path)
	}
	var sigs []signature.Signature
	for _, t := range info.Sigs {
		if sig, err := signature.ParseSignature(t); err == nil {
			sigs = append(sigs, sig)
		}
	}
	if !keys.Verify(info.Fingerprint(), sigs) {
		return fmt.Errorf("cannot add path '%s' because it lacks a valid signature", info.Path)
	}
	return nil
}

// checkRefs fails unless every reference of info (other than itself) is
// valid, as registration would ("path '%s' is not valid").
func (s *Store) checkRefs(ctx context.Context, info *PathInfo) error {
	for _, r := range info.References {
		if r == info.Path {
			continue
		}
		ok, err := s.db.IsValid(ctx, r)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("cannot add path '%s': reference path '%s' %w", info.Path, r, ErrNotValid)
		}
	}
	return nil
}
