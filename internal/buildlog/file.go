package buildlog

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/silo-cache/silo/internal/storepath"
)

// Path is where the log of drvPath goes under logDir (Nix's log-dir,
// /nix/var/log/nix): drvs/<2 chars>/<rest>, without ".bz2".
func Path(logDir string, drvPath storepath.Path) string {
	base := drvPath.Base()
	return filepath.Join(logDir, "drvs", base[:2], base[2:])
}

// Create creates (truncating) the log file of drvPath, mode 0666 as Nix
// creates it, and removes a .bz2 log of an earlier build so that readers,
// which prefer the plain file, never see a stale one either way.
func Create(logDir string, drvPath storepath.Path) (*os.File, error) {
	p := Path(logDir, drvPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("creating log directory: %w", err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666)
	if err != nil {
		return nil, fmt.Errorf("creating log file '%s': %w", p, err)
	}
	if err := os.Remove(p + ".bz2"); err != nil && !os.IsNotExist(err) {
		f.Close()
		return nil, fmt.Errorf("removing old log file: %w", err)
	}
	return f, nil
}
