// Package nar reads and writes Nix ARchives (NARs), the canonical
// serialisation of a file system tree that Nix hashes, signs and ships.
//
// Invariants:
//   - Nothing here holds a NAR whole in memory: Dump, HashPath, Reader,
//     Writer, Restore and WriteListing stream, and their memory use does not
//     grow with file sizes (List keeps one small node per entry).
//   - Dump produces exactly the bytes of `nix-store --dump` (Nix 2.8).
//   - Reader accepts only canonical NARs, the ones Dump would produce: it
//     rejects everything `nix-store --restore` rejects and more (unsorted or
//     duplicate entries, non-canonical field order, over-long tokens), so a
//     NAR that reads cleanly re-encodes to the same bytes.
//   - Costs are linear in the NAR: Reader and WriteListing never build an
//     entry's full path (depth times name length), and Reader bounds the
//     objects and nesting it accepts (Limits).
//   - Restore never writes outside its target directory and never follows a
//     symlink it did not create; on failure it removes what it created.
package nar

import (
	"errors"
	"fmt"
)

// Type is the type of a file system object in a NAR.
type Type uint8

// The three kinds of object a NAR can hold.
const (
	TypeRegular Type = iota + 1
	TypeDirectory
	TypeSymlink
)

func (t Type) String() string {
	switch t {
	case TypeRegular:
		return "regular"
	case TypeDirectory:
		return "directory"
	case TypeSymlink:
		return "symlink"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Header describes one object of a NAR, in the order the NAR holds them:
// a directory comes before its entries, entries in bytewise name order.
//
// An object's place is its Path for Writer, and its Name and Depth from
// Reader, which leaves Path empty (Reader.Path computes it): building
// every path would cost depth times name length per entry.
type Header struct {
	Path       string // "" for the root, "a/b" below it
	Name       string // the entry name ("b" for "a/b"); "" for the root
	Depth      int    // directories above the object: 0 for the root, 2 for "a/b"
	Type       Type
	Executable bool   // regular files only
	Size       int64  // regular files only: length of the contents
	LinkTarget string // symlinks only
	// Offset is the byte offset of a regular file's contents in the NAR
	// (the "narOffset" of .ls listings). Reader sets it; Writer ignores it.
	Offset int64
}

// Limits on tokens, as later Nix versions enforce them: a name is one path
// component, a target fits in PATH_MAX.
const (
	maxName   = 255
	maxTarget = 4095
	maxTag    = 16
	// maxDepth bounds the directory nesting Writer writes. Nix 2.8 has no
	// limit; no real store path comes near this one. (Reader's is in its
	// Limits.)
	maxDepth = 1024
)

const magic = "nix-archive-1"

// ErrInvalid is wrapped by every error about a malformed NAR.
var ErrInvalid = errors.New("invalid NAR")

// checkName reports why name cannot be a directory entry, or nil.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty entry name")
	case name == "." || name == "..":
		return fmt.Errorf("entry name %q not allowed", name)
	case len(name) > maxName:
		return fmt.Errorf("entry name of %d bytes exceeds %d", len(name), maxName)
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '/':
			return fmt.Errorf("entry name %q contains '/'", name)
		case 0:
			return fmt.Errorf("entry name %q contains NUL", name)
		}
	}
	return nil
}

// checkTarget reports why target cannot be a symlink target, or nil.
func checkTarget(target string) error {
	switch {
	case target == "":
		return errors.New("empty symlink target")
	case len(target) > maxTarget:
		return fmt.Errorf("symlink target of %d bytes exceeds %d", len(target), maxTarget)
	}
	for i := 0; i < len(target); i++ {
		if target[i] == 0 {
			return fmt.Errorf("symlink target %q contains NUL", target)
		}
	}
	return nil
}

// joinPath returns the path of entry name in directory dir.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// padLen returns the number of zero bytes that pad n bytes to 8.
func padLen(n uint64) int { return int(-n & 7) }
