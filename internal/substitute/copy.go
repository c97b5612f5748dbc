package substitute

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/worker"
)

// errGone is Nix's SubstituteGone: the narinfo is there but the NAR is
// not. It does not count as a failure of the substituter.
var errGone = errors.New("substitute gone")

// goneError is a message wrapping errGone without showing it.
type goneError string

func (e goneError) Error() string { return string(e) }
func (e goneError) Unwrap() error { return errGone }

// progressEvery is the least time between two progress results of one
// transfer (Nix sends one per chunk; the client only draws them).
const progressEvery = 100 * time.Millisecond

// copyPath downloads the NAR of ni from c and adds it to the store as
// info, as Nix's copyStorePath under an actSubstitute activity. The
// references of info other than itself must be valid.
func (s *Session) copyPath(ctx context.Context, c *Cache, ni *narinfo.NarInfo, info *nixstore.PathInfo, repair bool, parent uint64) error {
	cfg := s.config()
	path := info.Path.String()
	sub := s.log.StartActivity(worker.LvlError, worker.ActSubstitute, "",
		[]worker.Field{worker.StrField(path), worker.StrField(c.URI)}, parent)
	defer s.log.StopActivity(sub)
	act := s.log.StartActivity(worker.LvlInfo, worker.ActCopyPath, fmt.Sprintf("copying path '%s' from '%s'", path, c.URI),
		[]worker.Field{worker.StrField(path), worker.StrField(c.URI), worker.StrField("local")}, sub)
	defer s.log.StopActivity(act)

	if err := c.checkEnabled(s); err != nil {
		return err
	}
	method := ni.Compression
	if method == "" {
		method = compress.Bzip2 // Nix's default for a narinfo without Compression
	}
	body, size, err := c.t.open(ctx, ni.URL, &cfg)
	if err != nil {
		if errors.Is(err, errNotFound) {
			// Nix's NoSuchBinaryCacheFile, as each kind of cache words it.
			msg := fmt.Sprintf("file '%s' does not exist in binary cache '%s'", ni.URL, c.URI)
			if strings.HasPrefix(c.URI, "file://") {
				msg = fmt.Sprintf("file '%s' does not exist in binary cache", ni.URL)
			}
			return goneError(msg)
		}
		c.maybeDisable(s, &cfg)
		return err
	}
	defer body.Close()
	if size < 0 {
		size = int64(ni.FileSize)
	}
	dl := s.log.StartActivity(worker.LvlTalkative, worker.ActFileTransfer, fmt.Sprintf("downloading '%s'", c.t.describe(ni.URL)),
		[]worker.Field{worker.StrField(c.t.describe(ni.URL))}, act)
	defer s.log.StopActivity(dl)
	compressed := &progressReader{r: body, log: s.log, act: dl, expected: uint64(max(size, 0))}
	dec, err := compress.NewReader(method, bufio.NewReaderSize(compressed, 64<<10))
	if err != nil {
		return fmt.Errorf("decompressing the NAR of '%s' from '%s': %w", path, c.URI, err)
	}
	defer dec.Close()
	nar := &progressReader{r: dec, log: s.log, act: act, expected: info.NarSize}
	err = s.store.AddToStoreNar(ctx, info, bufio.NewReaderSize(nar, 64<<10), nixstore.AddOptions{
		Repair:      repair,
		CheckSigs:   !c.Trusted,
		TrustedKeys: s.trustedKeys(),
	})
	nar.flush()
	compressed.flush()
	var te *transferError
	_, cerr := compressed.counts()
	if err != nil && errors.As(cerr, &te) {
		c.maybeDisable(s, &cfg)
	}
	if err != nil {
		if n, nerr := nar.counts(); n < info.NarSize && nerr != nil {
			cause := nerr
			if errors.Is(cause, io.EOF) {
				cause = err
			}
			return fmt.Errorf("NAR for '%s' fetched from '%s' is incomplete: %w", path, c.URI, cause)
		}
		return err
	}
	return nil
}

// progressReader counts what is read and reports it as resProgress
// results of an activity. A decompressor may read it from a goroutine of
// its own while the counts are looked at.
type progressReader struct {
	r        io.Reader
	log      Logger
	act      uint64
	expected uint64

	mu   sync.Mutex
	n    uint64
	last time.Time
	err  error
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	p.n += uint64(n)
	if err != nil && p.err == nil {
		p.err = err
	}
	send := false
	if now := time.Now(); now.Sub(p.last) >= progressEvery {
		p.last, send = now, true
	}
	p.mu.Unlock()
	if send {
		p.flush()
	}
	return n, err
}

// counts returns the bytes read so far and the first error.
func (p *progressReader) counts() (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, p.err
}

func (p *progressReader) flush() {
	n, _ := p.counts()
	p.log.Result(p.act, worker.ResProgress, []worker.Field{worker.IntField(n), worker.IntField(max(p.expected, n)),
		worker.IntField(0), worker.IntField(0)})
}
