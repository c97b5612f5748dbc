package listen

import "bytes"

// framer follows the HTTP/1.x request framing of the bytes a connection
// reads, as net/http will parse them, for two things net/http does not
// tell its handlers: whether the connection is in the middle of a request
// (so that a read waiting on the client is held to the minimum rate, while
// one waiting for the next request, or net/http's background read during
// a response, is not), and whether a request had both Content-Length and
// Transfer-Encoding (net/http drops the Content-Length and reads the body
// chunked; a proxy in front may have framed it by Content-Length, the
// recipe of request smuggling).
//
// It keeps a few bytes of state, never a line. Where it cannot follow
// (input net/http would refuse, after which the connection closes) it
// stops, and reports no request as in progress or smuggled from then on.
type framer struct {
	st    frameState
	lineN int  // bytes of the current line so far
	cr    bool // the current line ended in '\r' so far (for empty lines)

	// Header line matching: which of the tracked names the line may still
	// be, and progress through it.
	cand    uint8 // bit 0: content-length, bit 1: transfer-encoding
	nameLen int
	inValue uint8 // which header's value is being read (0: none)

	// Per request.
	prefix   [10]byte // the request line's first bytes
	prefixN  int
	version  [9]byte // the request line's last bytes ("HTTP/1.0", perhaps "\r")
	sawCL    bool
	sawTE    bool
	clDigits bool
	clBad    bool
	clSpace  bool // a space after digits: a following digit makes it invalid
	clValue  uint64
	http10   bool

	headerLine bool   // the request line is done: lines are header fields
	remain     uint64 // body or chunk bytes left; chunk size being read
	hexSeen    bool   // a chunk-size line has digits
	hexDone    bool   // and they ended (extension or space follows)

	requests int // header blocks completed
	firstBad int // ordinal of the first request with both headers; -1: none
}

type frameState uint8

const (
	frIdle      frameState = iota // between requests
	frHeader                      // request line and header fields
	frBody                        // Content-Length body
	frChunkSize                   // a chunk-size line
	frChunkData                   // chunk data
	frChunkCRLF                   // the CRLF after chunk data
	frTrailer                     // trailer fields after the last chunk
	frOff                         // lost track; the connection will close
)

const (
	nameCL = "content-length:"
	nameTE = "transfer-encoding:"
)

func newFramer() framer { return framer{firstBad: -1} }

// inRequest reports whether bytes of a request are still expected.
func (f *framer) inRequest() bool { return f.st != frIdle && f.st != frOff }

// feed processes bytes read from the connection.
func (f *framer) feed(p []byte) {
	for len(p) > 0 {
		switch f.st {
		case frOff:
			return
		case frBody, frChunkData:
			n := uint64(len(p))
			if n > f.remain {
				n = f.remain
			}
			f.remain -= n
			p = p[n:]
			if f.remain == 0 {
				if f.st == frBody {
					f.st = frIdle
				} else {
					f.st, f.remain = frChunkCRLF, 2
				}
			}
		case frChunkCRLF:
			n := uint64(len(p))
			if n > f.remain {
				n = f.remain
			}
			f.remain -= n
			p = p[n:]
			if f.remain == 0 {
				f.st, f.lineN, f.hexSeen, f.hexDone, f.remain = frChunkSize, 0, false, false, 0
			}
		default:
			if f.lineN > 0 && p[0] != '\n' && f.boring() {
				// Nothing more to learn from this line: jump to its end.
				i := bytes.IndexByte(p, '\n')
				if i < 0 {
					i = len(p)
				}
				if f.st == frHeader && !f.headerLine {
					for _, c := range p[max(0, i-9):i] { // the request line's version
						f.requestLineByte(c)
					}
				}
				if i > 0 {
					f.cr = p[i-1] == '\r'
				}
				f.lineN += i
				p = p[i:]
				continue
			}
			c := p[0]
			p = p[1:]
			f.lineByte(c)
		}
	}
}

// boring reports whether the rest of the current line can be skipped: a
// header line neither named Content-Length nor being read for its value,
// a request line whose first bytes are kept, a trailer line.
func (f *framer) boring() bool {
	switch f.st {
	case frHeader:
		if !f.headerLine {
			return f.prefixN == len(f.prefix)
		}
		return f.cand == 0 && f.inValue != 1
	case frTrailer:
		return true
	}
	return false
}

// lineByte processes one byte of a line-oriented part of a request.
func (f *framer) lineByte(c byte) {
	if c == '\n' {
		empty := f.lineN == 0 || f.lineN == 1 && f.cr
		f.endLine(empty)
		f.lineN, f.cr = 0, false
		return
	}
	f.cr = c == '\r'
	n := f.lineN
	f.lineN++
	switch f.st {
	case frIdle:
		if c == '\r' && n == 0 {
			return // an empty line before the request line
		}
		f.startRequest()
		f.st = frHeader
		f.requestLineByte(c)
	case frHeader:
		if !f.headerLine {
			f.requestLineByte(c)
			return
		}
		f.headerByte(c, n)
	case frChunkSize:
		switch {
		case f.hexSeen && (c == ';' || c == ' ' || c == '\t' || c == '\r'):
			f.hexDone = true
		case f.hexDone:
			// extension or trailing space: ignored, as net/http does
		case hexVal(c) >= 0:
			if f.remain > (1<<59)-1 {
				f.st = frOff // net/http refuses sizes over 16 hex digits
				return
			}
			f.remain = f.remain<<4 | uint64(hexVal(c))
			f.hexSeen = true
		default:
			f.st = frOff
		}
	case frTrailer:
		// trailer fields are skipped
	}
}

// startRequest resets the per-request state.
func (f *framer) startRequest() {
	f.sawCL, f.sawTE, f.clDigits, f.clBad, f.clSpace, f.clValue, f.http10 = false, false, false, false, false, 0, false
	f.version = [9]byte{}
	f.prefixN = 0
	f.cand, f.nameLen, f.inValue = 0, 0, 0
	f.headerLine = false
}

func (f *framer) requestLineByte(c byte) {
	if f.prefixN < len(f.prefix) {
		f.prefix[f.prefixN] = c
		f.prefixN++
	}
	copy(f.version[:], f.version[1:])
	f.version[8] = c
}

// headerByte processes byte c at position n of a header line.
func (f *framer) headerByte(c byte, n int) {
	if n == 0 {
		f.cand, f.nameLen, f.inValue = 3, 0, 0
		if c == ' ' || c == '\t' {
			f.cand = 0 // a continuation line
		}
	}
	if f.inValue != 0 {
		if f.inValue == 1 {
			f.clByte(c)
		}
		return
	}
	if f.cand == 0 {
		return
	}
	lc := c | 0x20 // ASCII lower case (':' and '-' are unaffected)
	if c == ':' {
		lc = ':'
	}
	if f.cand&1 != 0 && (f.nameLen >= len(nameCL) || nameCL[f.nameLen] != lc) {
		f.cand &^= 1
	}
	if f.cand&2 != 0 && (f.nameLen >= len(nameTE) || nameTE[f.nameLen] != lc) {
		f.cand &^= 2
	}
	f.nameLen++
	switch {
	case f.cand&1 != 0 && f.nameLen == len(nameCL):
		f.sawCL, f.inValue, f.cand = true, 1, 0
		if f.clDigits {
			f.clBad = true // a second value: net/http accepts it only if equal; treat as unknown
		}
	case f.cand&2 != 0 && f.nameLen == len(nameTE):
		f.sawTE, f.inValue, f.cand = true, 2, 0
	}
}

// clByte processes a byte of a Content-Length value.
func (f *framer) clByte(c byte) {
	switch {
	case c >= '0' && c <= '9':
		if f.clSpace || f.clValue > (1<<62) {
			f.clBad = true
			return
		}
		f.clValue = f.clValue*10 + uint64(c-'0')
		f.clDigits = true
	case c == ' ' || c == '\t' || c == '\r':
		if f.clDigits {
			f.clSpace = true
		}
	default:
		f.clBad = true
	}
}

// endLine handles the end of a line.
func (f *framer) endLine(empty bool) {
	switch f.st {
	case frIdle:
		// empty lines before a request
	case frHeader:
		if !f.headerLine {
			f.headerLine = true
			v := f.version[1:]
			if f.version[8] == '\r' {
				v = f.version[:8]
			}
			f.http10 = string(v) == "HTTP/1.0"
			return
		}
		f.inValue, f.clSpace = 0, false
		if empty {
			f.endHeader()
		}
	case frChunkSize:
		if !f.hexSeen {
			f.st = frOff
			return
		}
		size := f.remain
		f.hexSeen, f.hexDone = false, false
		if size == 0 {
			f.st = frTrailer
		} else {
			f.st = frChunkData
		}
	case frTrailer:
		if empty {
			f.st = frIdle
		}
	}
}

// endHeader handles the end of a request's header block.
func (f *framer) endHeader() {
	ordinal := f.requests
	f.requests++
	// net/http answers "OPTIONS *" itself, without a handler, which
	// would put Protect's count of requests out of step with ours: the
	// connection is refused from there on (no Nix client sends it).
	optionsStar := string(f.prefix[:f.prefixN]) == "OPTIONS * "
	if (f.sawCL && f.sawTE || optionsStar) && f.firstBad < 0 {
		f.firstBad = ordinal
	}
	switch {
	case f.sawTE && !f.http10:
		f.st, f.remain, f.hexSeen, f.hexDone, f.lineN = frChunkSize, 0, false, false, 0
	case f.sawCL && f.clBad:
		f.st = frOff
	case f.sawCL && f.clValue > 0:
		f.st, f.remain = frBody, f.clValue
	default:
		f.st = frIdle
	}
}

func hexVal(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
