// Package buildlog handles a builder's output as Nix 2.8's DerivationGoal
// does: the raw bytes go to the log file, and lines (where "\r" moves back
// to the start of the line and "\n" ends it) go to the client as build log
// lines, except "@nix {json}" lines, which are log messages from the
// builder (phases, messages, file-transfer activities) and are forwarded
// as such. The last log-lines lines are kept for the error message.
//
// Log files are <logDir>/drvs/<first 2 chars of the .drv's base
// name>/<rest>, written uncompressed: Nix reads plain and .bz2 logs alike,
// and Go has no bzip2 writer in its standard library (see File).
//
// Invariant: memory use is bounded by the longest line and log-lines; the
// log itself streams to the file and is never held.
package buildlog

import (
	"errors"
	"fmt"

	"github.com/silo-cache/silo/internal/nixjson"
)

// Result and activity types of Nix's logger that builders may use.
const (
	ActFileTransfer = 101
	ResBuildLogLine = 101
	ResSetPhase     = 104
)

// Field is one field of an activity or result: a number or a string.
type Field struct {
	Int      uint64
	Str      string
	IsString bool
}

// Sink receives what a build's output produces.
type Sink interface {
	// Line is a build log line (resBuildLogLine of the build's activity).
	Line(line string)
	// Phase is a setPhase message (resSetPhase of the build's activity).
	Phase(phase string)
	// Message is a "msg" message at a verbosity level.
	Message(level uint64, msg string)
	// StartActivity starts a file-transfer activity of the builder
	// (the only kind an untrusted builder may start), as a child of the
	// build's activity. id is the builder's own.
	StartActivity(id uint64, level uint64, typ uint64, text string, fields []Field)
	// StopActivity stops an activity StartActivity started.
	StopActivity(id uint64)
	// Result is a result of an activity StartActivity started.
	Result(id uint64, typ uint64, fields []Field)
	// BadMessage reports an "@nix" line that could not be handled
	// (Nix prints "bad JSON log message from builder: ...").
	BadMessage(err error)
}

// ErrLogLimit is returned by Write once more than the limit was written.
var ErrLogLimit = errors.New("build log limit exceeded")

// Lines splits a builder's output into log lines.
type Lines struct {
	sink       Sink
	tailMax    int
	limit      uint64
	written    uint64
	line       []byte
	pos        int
	tail       []string
	activities map[uint64]bool
}

// NewLines returns a Lines sending to sink, keeping the last logLines
// lines, and failing Write after more than maxLogSize bytes (0: no limit).
func NewLines(sink Sink, logLines int, maxLogSize uint64) *Lines {
	return &Lines{sink: sink, tailMax: logLines, limit: maxLogSize, activities: map[uint64]bool{}}
}

// Write handles a chunk of the builder's output. After ErrLogLimit the
// caller kills the build ("%s killed after writing more than %d bytes of
// log output").
func (l *Lines) Write(p []byte) (int, error) {
	l.written += uint64(len(p))
	if l.limit > 0 && l.written > l.limit {
		return 0, fmt.Errorf("%w: more than %d bytes", ErrLogLimit, l.limit)
	}
	for _, c := range p {
		switch c {
		case '\r':
			l.pos = 0
		case '\n':
			l.flush()
		default:
			if l.pos >= len(l.line) {
				l.line = append(l.line, c)
			} else {
				l.line[l.pos] = c
			}
			l.pos++
		}
	}
	return len(p), nil
}

// Close flushes a last line without newline (Nix's handleEOF).
func (l *Lines) Close() error {
	if len(l.line) > 0 {
		l.flush()
	}
	return nil
}

// Tail returns the last log-lines lines (for "last N log lines:").
func (l *Lines) Tail() []string { return l.tail }

// Written is the number of bytes of output seen.
func (l *Lines) Written() uint64 { return l.written }

func (l *Lines) flush() {
	line := string(l.line)
	l.line, l.pos = l.line[:0], 0
	if l.handleJSON(line) {
		return
	}
	if l.tailMax > 0 {
		if len(l.tail) == l.tailMax {
			copy(l.tail, l.tail[1:])
			l.tail = l.tail[:len(l.tail)-1]
		}
		l.tail = append(l.tail, line)
	}
	l.sink.Line(line)
}

// handleJSON is Nix's handleJSONLogMessage for an untrusted builder.
func (l *Lines) handleJSON(line string) bool {
	if len(line) < 5 || line[:5] != "@nix " {
		return false
	}
	js, err := nixjson.Parse([]byte(line[5:]))
	if err != nil {
		l.sink.BadMessage(err)
		return false // logged as an ordinary line, as in Nix
	}
	if err := l.message(js); err != nil {
		l.sink.BadMessage(err)
	}
	return true
}

func (l *Lines) message(js *nixjson.Value) error {
	str := func(key string) (string, error) {
		v := js.Find(key)
		if v == nil {
			return "", fmt.Errorf("message lacks %q", key)
		}
		return v.GetString()
	}
	num := func(key string) (uint64, error) {
		v := js.Find(key)
		if v == nil {
			return 0, fmt.Errorf("message lacks %q", key)
		}
		return v.GetUint64()
	}
	action, err := str("action")
	if err != nil {
		return err
	}
	switch action {
	case "start":
		typ, err := num("type")
		if err != nil {
			return err
		}
		if typ != ActFileTransfer {
			return nil
		}
		id, err := num("id")
		if err != nil {
			return err
		}
		level, err := num("level")
		if err != nil {
			return err
		}
		text, err := str("text")
		if err != nil {
			return err
		}
		fields, err := getFields(js.Find("fields"))
		if err != nil {
			return err
		}
		l.activities[id] = true
		l.sink.StartActivity(id, level, typ, text, fields)
	case "stop":
		id, err := num("id")
		if err != nil {
			return err
		}
		if l.activities[id] {
			delete(l.activities, id)
			l.sink.StopActivity(id)
		}
	case "result":
		id, err := num("id")
		if err != nil {
			return err
		}
		if !l.activities[id] {
			return nil
		}
		typ, err := num("type")
		if err != nil {
			return err
		}
		fields, err := getFields(js.Find("fields"))
		if err != nil {
			return err
		}
		l.sink.Result(id, typ, fields)
	case "setPhase":
		phase, err := str("phase")
		if err != nil {
			return err
		}
		l.sink.Phase(phase)
	case "msg":
		msg, err := str("msg")
		if err != nil {
			return err
		}
		level, err := num("level")
		if err != nil {
			return err
		}
		l.sink.Message(level, msg)
	}
	return nil
}

func getFields(v *nixjson.Value) ([]Field, error) {
	if v == nil {
		return nil, nil
	}
	var out []Field
	for _, f := range v.Iter() {
		switch f.Kind {
		case nixjson.Uint:
			out = append(out, Field{Int: f.Uint})
		case nixjson.String:
			out = append(out, Field{Str: f.Str, IsString: true})
		default:
			return nil, fmt.Errorf("unsupported JSON type %s in fields", f.Kind)
		}
	}
	return out, nil
}
