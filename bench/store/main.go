// Command store drives silo's local-store engine (packages nixstore and
// nixgc) on a chroot store, for bench/store.sh to time against the real
// nix-store doing the same:
//
//	store add ROOT PATH      add PATH recursively (nix-store --add)
//	store add-nar ROOT NAME  add the NAR on stdin as NAME (what the daemon does with a client's upload)
//	store import ROOT PATH SHA256 SIZE
//	                         add the NAR on stdin as PATH with that NAR hash and size (AddToStoreNar,
//	                         what nix-store --import and nix copy make the daemon do)
//	store garbage ROOT N     add N small unrooted paths, the last referring to the previous ones in chains of 5
//	store gc ROOT            collect garbage (nix-store --gc)
//	store query ROOT         query the path info of every valid path (nix path-info --all)
//
// ROOT is a chroot store as `nix-store --store ROOT` uses it.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: store add|garbage|gc|query ROOT [ARG]")
		os.Exit(2)
	}
	ctx := context.Background()
	if err := run(ctx, os.Args[1], os.Args[2], os.Args[3:]); err != nil {
		fmt.Fprintln(os.Stderr, "store:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd, root string, args []string) error {
	o := nixstore.DefaultOptions(storepath.DefaultDir, filepath.Join(root, "nix/var/nix"), filepath.Join(root, "nix/var/log/nix"))
	o.RealStoreDir = filepath.Join(root, "nix/store")
	if os.Getenv("FSYNC_METADATA") == "0" {
		o.FsyncMetadata = false
	}
	s, err := nixstore.Open(ctx, o)
	if err != nil {
		return err
	}
	defer s.Close()
	start := time.Now()
	switch cmd {
	case "add":
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(nar.Dump(ctx, pw, args[0])) }()
		info, err := s.AddToStoreFromDump(ctx, bufio.NewReaderSize(pr, 64<<10), filepath.Base(args[0]), nixstore.CAMethod{Recursive: true, Algo: hash.SHA256}, nil, nixstore.AddOptions{})
		if err != nil {
			return err
		}
		fmt.Println(info.Path)
	case "add-nar":
		info, err := s.AddToStoreFromDump(ctx, bufio.NewReaderSize(os.Stdin, 64<<10), args[0], nixstore.CAMethod{Recursive: true, Algo: hash.SHA256}, nil, nixstore.AddOptions{})
		if err != nil {
			return err
		}
		fmt.Println(info.Path)
	case "import":
		p, err := s.ParsePath(args[0])
		if err != nil {
			return err
		}
		h, err := hash.ParseAs(args[1], hash.SHA256)
		if err != nil {
			return err
		}
		size, err := strconv.ParseUint(args[2], 10, 64)
		if err != nil {
			return err
		}
		info := &nixstore.PathInfo{Path: p, NarHash: h, NarSize: size}
		if err := s.AddToStoreNar(ctx, info, bufio.NewReaderSize(os.Stdin, 64<<10), nixstore.AddOptions{}); err != nil {
			return err
		}
	case "garbage":
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return err
		}
		var prev []storepath.Path
		for i := 0; i < n; i++ {
			if i%5 == 0 {
				prev = nil
			}
			text := fmt.Sprintf("garbage %d %d %v", i, time.Now().UnixNano(), prev)
			info, err := s.AddTextToStore(ctx, fmt.Sprintf("garbage-%d", i), []byte(text), prev, nixstore.AddOptions{})
			if err != nil {
				return err
			}
			prev = append(prev, info.Path)
		}
	case "gc":
		res, err := nixgc.CollectGarbage(ctx, s, nixgc.Options{Action: nixgc.DeleteDead, MaxFreed: nixgc.Unlimited, KeepDerivations: true})
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%d store paths deleted, %.2f MiB freed\n", len(res.Paths), float64(res.BytesFreed)/(1<<20))
	case "query":
		paths, err := s.QueryAllValidPaths(ctx)
		if err != nil {
			return err
		}
		for _, p := range paths {
			if _, err := s.QueryPathInfo(ctx, p); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	fmt.Fprintf(os.Stderr, "%s: %.3fs\n", cmd, time.Since(start).Seconds())
	return nil
}
