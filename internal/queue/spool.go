package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SpoolDir is the directory beside socket where the hook leaves paths
// when the queue does not answer: socket + ".spool".
func SpoolDir(socket string) string { return socket + ".spool" }

const spoolExt = ".json"

// writeSpool stores a request as one file in dir, atomically: written
// under a temporary name, then renamed to <time>-<pid>-<rand>.json. It does
// not fsync (like the queue database and Nix's own, it survives a crash of
// any process, not a power failure): a hook must not wait for the disk.
func writeSpool(dir string, req enqueueRequest) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create spool directory: %w", err)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	name := strconv.FormatInt(time.Now().UnixNano(), 10) + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(rnd[:]) + spoolExt
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("write spool file: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write spool file in %s: %w", dir, err)
	}
	return nil
}

// ingestSpool queues every spool file, oldest first, deleting each once its
// paths are committed; it returns how many files it read.
func (q *Queue) ingestSpool(ctx context.Context) (int, error) {
	entries, err := os.ReadDir(q.spool)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var names []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, spoolExt) && !strings.HasPrefix(name, "."):
			names = append(names, name)
		case strings.HasPrefix(name, ".tmp-"):
			// A hook died mid-write; give live hooks a minute.
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
				os.Remove(filepath.Join(q.spool, name))
			}
		}
	}
	sort.Strings(names) // names start with the time
	n := 0
	for _, name := range names {
		file := filepath.Join(q.spool, name)
		data, err := os.ReadFile(file)
		if err != nil {
			return n, err
		}
		var req enqueueRequest
		if err := json.Unmarshal(data, &req); err != nil {
			q.log.Error("unreadable spool file, set aside", "file", file, "err", err)
			os.Rename(file, file+".bad")
			continue
		}
		if err := q.Enqueue(ctx, req.Paths, req.Drv); err != nil {
			if ctx.Err() != nil {
				return n, err
			}
			q.log.Error("invalid spool file, set aside", "file", file, "err", err)
			os.Rename(file, file+".bad")
			continue
		}
		if err := os.Remove(file); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// CountSpool returns how many hook hand-overs wait in the spool dir.
func CountSpool(dir string) int {
	if dir == "" {
		return 0
	}
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), spoolExt) && !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n
}

// HookOptions configures Hook.
type HookOptions struct {
	Socket string
	// Timeout bounds the wait for the queue before spooling (default 30 ms).
	Timeout time.Duration
	Stderr  io.Writer // problems are reported here; nil discards
}

// Hook is Nix's post-build-hook: it hands the space-separated store paths
// in $OUT_PATHS (and $DRV_PATH) to the queue at opts.Socket, or, if the
// queue does not answer within the timeout, leaves them in the spool. It
// reports how it went and never fails: a build must not fail or wait
// because of an upload.
func Hook(ctx context.Context, getenv func(string) string, opts HookOptions) (queued bool) {
	stderr := opts.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "silo hook: internal error (the build is unaffected): %v\n", r)
		}
	}()
	// Nix 2.8.0 leaves OUT_PATHS empty (NixOS/nix#6446); the queue then
	// finds the outputs from DRV_PATH.
	paths := strings.Fields(getenv("OUT_PATHS"))
	req := enqueueRequest{Paths: paths, Drv: strings.TrimSpace(getenv("DRV_PATH"))}
	if len(paths) == 0 && req.Drv == "" {
		return true
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Millisecond
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := NewClient(opts.Socket).Enqueue(cctx, req.Paths, req.Drv)
	cancel()
	if err == nil {
		return true
	}
	if serr := writeSpool(SpoolDir(opts.Socket), req); serr != nil {
		fmt.Fprintf(stderr, "silo hook: could not queue %s %s (the build is unaffected): %v; and %v\n", strings.Join(paths, " "), req.Drv, err, serr)
		return false
	}
	return true
}
