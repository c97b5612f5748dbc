package nar

import (
	"bufio"
	"io"
	"sort"
	"strconv"
)

// Listing is the table of contents of a NAR, as Nix writes it to
// "<hashpart>.ls" in a binary cache with write-nar-listing=true.
type Listing struct {
	Root *ListNode
}

// ListNode is one object of a Listing.
type ListNode struct {
	Type       Type
	Size       int64                // regular files
	Executable bool                 // regular files
	NarOffset  int64                // regular files: offset of the contents in the NAR
	Target     string               // symlinks
	Entries    map[string]*ListNode // directories
}

// List reads a NAR and returns its listing. It keeps one node per object,
// never file contents.
func List(r io.Reader) (*Listing, error) {
	nr := NewReader(r)
	l := &Listing{}
	var dirs []*ListNode // open directories along the current path
	for {
		h, err := nr.Next()
		if err == io.EOF {
			return l, nil
		}
		if err != nil {
			return nil, err
		}
		n := &ListNode{Type: h.Type, Size: h.Size, Executable: h.Executable, NarOffset: h.Offset, Target: h.LinkTarget}
		if h.Type == TypeDirectory {
			n.Entries = map[string]*ListNode{}
		}
		if h.Depth == 0 {
			l.Root = n
		} else {
			dirs = dirs[:h.Depth]
			dirs[h.Depth-1].Entries[h.Name] = n
		}
		if h.Type == TypeDirectory {
			dirs = append(dirs, n)
		}
	}
}

// MarshalJSON returns the listing exactly as Nix 2.8 writes it: no spaces,
// keys in Nix's order, entries sorted bytewise, strings escaped as Nix's
// own JSON writer does (bytes >= 0x80 are copied as they are).
func (l *Listing) MarshalJSON() ([]byte, error) {
	b := []byte(`{"version":1,"root":`)
	if l.Root == nil {
		b = append(b, "null"...)
	} else {
		b = l.Root.appendJSON(b)
	}
	return append(b, '}'), nil
}

func (n *ListNode) appendJSON(b []byte) []byte {
	switch n.Type {
	case TypeRegular:
		b = appendRegular(b, n.Size, n.Executable, n.NarOffset)
	case TypeSymlink:
		b = appendSymlink(b, n.Target)
	case TypeDirectory:
		b = append(b, `{"type":"directory","entries":{`...)
		names := make([]string, 0, len(n.Entries))
		for name := range n.Entries {
			names = append(names, name)
		}
		sort.Strings(names)
		for i, name := range names {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, name)
			b = append(b, ':')
			b = n.Entries[name].appendJSON(b)
		}
		b = append(b, "}}"...)
	default:
		b = append(b, "{}"...)
	}
	return b
}

func appendRegular(b []byte, size int64, exec bool, offset int64) []byte {
	b = append(b, `{"type":"regular","size":`...)
	b = strconv.AppendInt(b, size, 10)
	if exec {
		b = append(b, `,"executable":true`...)
	}
	if offset != 0 {
		b = append(b, `,"narOffset":`...)
		b = strconv.AppendInt(b, offset, 10)
	}
	return append(b, '}')
}

func appendSymlink(b []byte, target string) []byte {
	b = append(b, `{"type":"symlink","target":`...)
	b = appendJSONString(b, target)
	return append(b, '}')
}

// appendJSONString quotes s as Nix's toJSON does: it escapes '"', '\\',
// \n, \r, \t and other control bytes (as \u00XX) and nothing else.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// WriteListing writes the listing of the NAR read from r to w, the same
// bytes as List followed by MarshalJSON, while reading: its memory does
// not grow with the number of entries.
func WriteListing(w io.Writer, r io.Reader) error {
	return WriteReaderListing(w, NewReader(r))
}

// WriteReaderListing is WriteListing reading from nr (with its Limits),
// from its start. Its cost is linear in the NAR.
func WriteReaderListing(w io.Writer, nr *Reader) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	var b []byte
	open := 0     // open directories
	first := true // no entry written yet in the innermost open directory
	b = append(b, `{"version":1,"root":`...)
	for {
		h, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if h.Depth > 0 {
			for open > h.Depth {
				open--
				b = append(b, "}}"...)
				first = false
			}
			if !first {
				b = append(b, ',')
			}
			b = appendJSONString(b, h.Name)
			b = append(b, ':')
		}
		first = false
		switch h.Type {
		case TypeRegular:
			b = appendRegular(b, h.Size, h.Executable, h.Offset)
		case TypeSymlink:
			b = appendSymlink(b, h.LinkTarget)
		case TypeDirectory:
			b = append(b, `{"type":"directory","entries":{`...)
			open++
			first = true
		}
		if len(b) > 16<<10 {
			if _, err := bw.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	for range open {
		b = append(b, "}}"...)
	}
	b = append(b, '}')
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}
