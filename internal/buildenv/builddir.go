package buildenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/silo-cache/silo/internal/storepath"
)

// MakeBuildDir creates the build directory of drvPath as Nix's
// createTempDir does: <tmpRoot>/nix-build-<drv name>-<n> (the first free
// n from 0), mode 0700, owned by uid:gid when uid >= 0. tmpRoot "" is
// $TMPDIR, or /tmp.
func MakeBuildDir(tmpRoot string, drvPath storepath.Path, uid, gid int) (string, error) {
	if tmpRoot == "" {
		tmpRoot = os.Getenv("TMPDIR")
		if tmpRoot == "" {
			tmpRoot = "/tmp"
		}
	}
	prefix := filepath.Join(tmpRoot, "nix-build-"+drvPath.Name())
	for n := 0; n < 1<<20; n++ {
		dir := prefix + "-" + strconv.Itoa(n)
		err := os.Mkdir(dir, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("creating directory '%s': %w", dir, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return "", err
		}
		if uid >= 0 {
			if err := os.Chown(dir, uid, gid); err != nil {
				os.Remove(dir)
				return "", fmt.Errorf("cannot change ownership of '%s': %w", dir, err)
			}
		}
		return dir, nil
	}
	return "", fmt.Errorf("cannot create a build directory under %s", tmpRoot)
}
