package publish

import (
	"compress/bzip2"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/silo-cache/silo/internal/localstore"
)

// serveLog answers GET and HEAD /log/<drv base name> from Nix's log
// directory, where Nix 2.8 keeps a build's log as drvs/<first two
// characters>/<rest>, bzip2-compressed with a .bz2 suffix unless
// compress-build-log is off (older Nix: drvs/<base name>). The log is sent
// decompressed, as Nix's own getBuildLog returns it. For an output path
// rather than a .drv, the log of its deriver is sent.
func (s *Server) serveLog(w *statusWriter, r *http.Request) {
	p, err := s.opts.StoreDir.ParseBase(r.PathValue("drv"))
	if err != nil {
		notFound(w, "not a store path base name: "+err.Error())
		return
	}
	if !strings.HasSuffix(p.Name(), ".drv") {
		info, err := s.store.QueryPathInfo(r.Context(), p)
		switch {
		case errors.Is(err, localstore.ErrNotFound):
			notFound(w, p.String()+" is not a valid path, so its deriver is unknown (ask for log/<drv base name>)")
			return
		case err != nil:
			s.log.Error("publish: query store", "path", p.String(), "err", err)
			http.Error(w, "cannot query the store", http.StatusInternalServerError)
			return
		case info.Deriver.IsZero():
			notFound(w, p.String()+" has no known deriver, so no build log")
			return
		}
		p = info.Deriver
	}
	base := p.Base()
	var f *os.File
	var compressed bool
	for _, name := range []string{
		filepath.Join(s.logDir, "drvs", base[:2], base[2:]),
		filepath.Join(s.logDir, "drvs", base),
	} {
		if f, err = os.Open(name); err == nil {
			break
		}
		if f, err = os.Open(name + ".bz2"); err == nil {
			compressed = true
			break
		}
	}
	if f == nil {
		notFound(w, "no build log for "+p.String())
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	var src io.Reader = f
	if compressed {
		src = bzip2.NewReader(f)
	}
	// Hold the last byte back until the whole log has been read, so that a
	// corrupt .bz2 file aborts the response rather than ending it early.
	hw := &holdLast{w: w}
	if _, err := io.Copy(hw, src); err == nil {
		err = hw.finish()
		if err == nil {
			return
		}
	} else if r.Context().Err() == nil {
		s.log.Error("publish: build log aborted", "file", f.Name(), "err", err)
	}
	panic(http.ErrAbortHandler)
}
