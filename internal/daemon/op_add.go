package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nixdb"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// uploadBuffer buffers a tunnelled upload (one request per read) for the
// store's NAR reader, which reads in small pieces. A framed upload needs
// no buffer of its own: FramedReader reads from the connection's buffer.
const uploadBuffer = 64 << 10

// addOptions are the options of an addition by this connection.
func (c *conn) addOptions(repair, checkSigs bool) nixstore.AddOptions {
	return nixstore.AddOptions{Repair: repair, CheckSigs: checkSigs, Optimise: c.settings.Bool("auto-optimise-store")}
}

// opAddToStore adds content by its content address: protocol ≥ 1.25 sends
// a name, a content-address method, references, repair and a framed dump
// (a NAR, or a flat file's bytes); older clients send a NAR inline.
func opAddToStore(ctx context.Context, c *conn) error {
	if c.minor < 25 {
		return addToStoreOld(ctx, c)
	}
	name, err := c.dec.String()
	if err != nil {
		return err
	}
	camStr, err := c.dec.String()
	if err != nil {
		return err
	}
	refs, err := c.readPaths()
	if err != nil {
		return err
	}
	repair, err := c.dec.Bool()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	src := c.framedSource()
	m, err := nixstore.ParseCAMethod(camStr)
	if err != nil {
		return err
	}
	info, err := c.store.AddToStoreFromDump(ctx, src, name, m, refs, c.addOptions(repair, false))
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.WritePathInfo(info.Path.String(), wireInfo(info), true, c.minor)
	return nil
}

// addToStoreOld is AddToStore before protocol 1.25: name, "fixed"
// (obsolete), recursive, hash algorithm, then the content as a NAR inline
// (not framed), and the reply is the path.
func addToStoreOld(ctx context.Context, c *conn) error {
	name, err := c.dec.String()
	if err != nil {
		return err
	}
	fixed, err := c.dec.Bool()
	if err != nil {
		return err
	}
	recursive, err := c.dec.Uint64()
	if err != nil {
		return err
	}
	algo, err := c.dec.String()
	if err != nil {
		return err
	}
	if recursive > 1 {
		return fmt.Errorf("unsupported FileIngestionMethod with value of %d; you may need to upgrade nix-daemon", recursive)
	}
	m := nixstore.CAMethod{Recursive: recursive == 1}
	if !fixed { // compatibility hack, as Nix
		algo, m.Recursive = "sha256", true
	}
	if m.Algo, err = hash.ParseAlgo(algo); err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	c.inlineData = true // a failure loses our place in the stream
	var src io.Reader = c.dec.Buffered()
	var nr *nar.Reader
	if !m.Recursive {
		// The content is a NAR of one regular file: pass on its bytes.
		nr = nar.NewExactReader(src)
		h, err := nr.Next()
		if err != nil {
			return err
		}
		if h.Type != nar.TypeRegular {
			return errors.New("regular file expected")
		}
		src = nr
	}
	info, err := c.store.AddToStoreFromDump(ctx, src, name, m, nil, c.addOptions(false, false))
	if err != nil {
		return err
	}
	if nr != nil {
		if _, err := nr.Next(); err != io.EOF {
			return fmt.Errorf("regular file expected: %v", err)
		}
	}
	c.inlineData = false
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.String(info.Path.String())
	return nil
}

func opAddTextToStore(ctx context.Context, c *conn) error {
	name, err := c.dec.String()
	if err != nil {
		return err
	}
	text, err := c.dec.String()
	if err != nil {
		return err
	}
	refs, err := c.readPaths()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	info, err := c.store.AddTextToStore(ctx, name, []byte(text), refs, c.addOptions(false, false))
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.String(info.Path.String())
	return nil
}

// storeInfo converts path info from the protocol to the store's.
func (c *conn) storeInfo(path string, w *worker.PathInfo) (*nixstore.PathInfo, error) {
	p, err := c.parsePath(path)
	if err != nil {
		return nil, err
	}
	info := &nixstore.PathInfo{Path: p, NarSize: w.NarSize, Ultimate: w.Ultimate, Sigs: w.Sigs, CA: w.CA}
	if w.Deriver != "" {
		if info.Deriver, err = c.parsePath(w.Deriver); err != nil {
			return nil, err
		}
	}
	if info.NarHash, err = hash.ParseAs(w.NarHash, hash.SHA256); err != nil {
		return nil, fmt.Errorf("NAR hash of '%s': %w", path, err)
	}
	for _, r := range w.References {
		rp, err := c.parsePath(r)
		if err != nil {
			return nil, err
		}
		info.References = append(info.References, rp)
	}
	if w.RegistrationTime != 0 && w.RegistrationTime < 1<<40 {
		info.RegistrationTime = time.Unix(int64(w.RegistrationTime), 0)
	}
	return info, nil
}

// opAddToStoreNar imports a path with its metadata and NAR (nix-store
// --import, nix copy, substitution relays). An untrusted client's
// signatures are always checked and its paths are never "ultimate".
func opAddToStoreNar(ctx context.Context, c *conn) error {
	path, w, err := c.dec.ReadPathInfo(true, 16)
	if err != nil {
		return err
	}
	info, err := c.storeInfo(path, w)
	if err != nil {
		return err
	}
	repair, err := c.dec.Bool()
	if err != nil {
		return err
	}
	dontCheckSigs, err := c.dec.Bool()
	if err != nil {
		return err
	}
	if !c.peer.Trusted {
		dontCheckSigs, info.Ultimate = false, false
	}
	if err := c.startWork(); err != nil {
		return err
	}
	var src io.Reader
	switch {
	case c.minor >= 23:
		src = c.framedSource()
	case c.minor >= 21:
		src = bufio.NewReaderSize(&tunnelReader{c: c}, uploadBuffer)
	default:
		c.inlineData = true
		src = c.dec.Buffered()
	}
	cr := &countingReader{r: src}
	if err := c.store.AddToStoreNar(ctx, info, cr, c.addOptions(repair, !dontCheckSigs)); err != nil {
		return err
	}
	if cr.n == 0 && c.minor < 23 {
		// Already valid: the NAR is still on its way and must be read.
		if err := skipNAR(cr); err != nil {
			return err
		}
	}
	c.inlineData = false
	return c.stopWork()
}

// skipNAR reads a NAR to its end, checking it, and discards it.
func skipNAR(r io.Reader) error {
	nr := nar.NewExactReader(r)
	for {
		if _, err := nr.Next(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, nr); err != nil {
			return err
		}
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// tunnelReader reads data the client sends on request (STDERR_READ), as
// AddToStoreNar before protocol 1.23 does.
type tunnelReader struct{ c *conn }

func (t *tunnelReader) Read(p []byte) (int, error) {
	if err := t.c.log.RequestData(uint64(len(p))); err != nil {
		return 0, err
	}
	s, err := t.c.dec.String()
	if err != nil {
		return 0, err
	}
	if len(s) > len(p) {
		return 0, fmt.Errorf("%w: client sent %d bytes for a request of %d", worker.ErrProtocol, len(s), len(p))
	}
	if len(s) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	return copy(p, s), nil
}

func opAddSignatures(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	sigs, err := c.dec.Strings()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	if err := c.requireTrust("add signatures"); err != nil {
		return err
	}
	if err := c.store.AddSignatures(ctx, p, sigs); err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(1)
	return nil
}

// opAddBuildLog stores a build log (nix store copy-log --to): the
// derivation's base name, then the log framed.
func opAddBuildLog(ctx context.Context, c *conn) error {
	base, err := c.dec.String()
	if err != nil {
		return err
	}
	drv, err := c.dir.ParseBase(base)
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	src := c.framedSource() // read to its end even when refused
	if err := c.requireTrust("add logs"); err != nil {
		return err
	}
	if err := c.store.AddBuildLog(ctx, drv, src); err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(1)
	return nil
}

// opRegisterDrvOutput records a realisation of a CA derivation output
// (needs ca-derivations in the daemon's configuration). No reply follows.
func opRegisterDrvOutput(ctx context.Context, c *conn) error {
	if err := c.startWork(); err != nil {
		return err
	}
	var r *nixdb.Realisation
	if c.minor < 31 {
		id, err := c.dec.String()
		if err != nil {
			return err
		}
		out, err := c.dec.String()
		if err != nil {
			return err
		}
		if r, err = c.realisation(worker.Realisation{ID: id, OutPath: out}); err != nil {
			return err
		}
	} else {
		js, err := c.dec.String()
		if err != nil {
			return err
		}
		w, err := worker.ParseRealisation(js)
		if err != nil {
			return err
		}
		if r, err = c.realisation(w); err != nil {
			return err
		}
	}
	if err := c.store.RegisterRealisation(ctx, r); err != nil {
		return err
	}
	return c.stopWork()
}

// realisation converts a realisation from the protocol's form.
func (c *conn) realisation(w worker.Realisation) (*nixdb.Realisation, error) {
	id, err := nixdb.ParseDrvOutput(w.ID)
	if err != nil {
		return nil, err
	}
	parseBase := func(s string) (storepath.Path, error) {
		if p, err := c.dir.Parse(s); err == nil { // protocol < 1.31 sends full paths
			return p, nil
		}
		return c.dir.ParseBase(s)
	}
	out, err := parseBase(w.OutPath)
	if err != nil {
		return nil, err
	}
	r := &nixdb.Realisation{ID: id, OutPath: out, Signatures: w.Signatures, DependentRealisations: map[nixdb.DrvOutput]storepath.Path{}}
	for k, v := range w.DependentRealisations {
		did, err := nixdb.ParseDrvOutput(k)
		if err != nil {
			return nil, err
		}
		if r.DependentRealisations[did], err = parseBase(v); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// opNarFromPath sends a path's NAR, raw, after STDERR_LAST (ssh-ng
// clients; local clients read the store themselves).
func opNarFromPath(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	ok, err := c.store.IsValid(ctx, p)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("path '%s' is not valid", p)
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	return nar.Dump(ctx, c.enc.RawWriter(), c.store.RealPath(p))
}

// The export and import stream operations were replaced (protocol 1.18)
// by client-side export and AddToStoreNar; Nix 2.0 and later never send
// them.

func opExportPath(ctx context.Context, c *conn) error {
	if _, err := c.readPath(); err != nil {
		return err
	}
	if _, err := c.dec.Uint64(); err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	return errors.New("ExportPath (protocol before 1.18) is not supported by silo daemon; use a Nix client from 2.0 on")
}

func opImportPaths(ctx context.Context, c *conn) error {
	c.inlineData = true // the client would send the stream on request
	if err := c.startWork(); err != nil {
		return err
	}
	return errors.New("ImportPaths (protocol before 1.18) is not supported by silo daemon; use a Nix client from 2.0 on")
}
