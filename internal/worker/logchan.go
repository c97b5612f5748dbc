package worker

import (
	"errors"
	"sync"
)

// Verbosity levels (Nix's Verbosity).
const (
	LvlError uint64 = iota
	LvlWarn
	LvlNotice
	LvlInfo
	LvlTalkative
	LvlChatty
	LvlDebug
	LvlVomit
)

// Field is one field of an activity or result: an integer or a string.
type Field struct {
	Int   uint64
	Str   string
	IsStr bool
}

// IntField and StrField make Fields.
func IntField(v uint64) Field { return Field{Int: v} }

// StrField makes a string Field.
func StrField(s string) Field { return Field{Str: s, IsStr: true} }

// LogChannel is the server side of the log channel (Nix's TunnelLogger):
// between StartWork and StopWork messages go to the client at once;
// outside, they are queued and sent at the next StartWork. It is safe for
// concurrent use: a store may log from other goroutines.
//
// Invariant: the owner writes a reply only after StopWork, and only from
// the goroutine that called it.
type LogChannel struct {
	enc     *Encoder
	minor   uint64 // the client's protocol minor
	mu      sync.Mutex
	working bool
	pending [][]byte
	err     error
}

// NewLogChannel returns the log channel on e for a client speaking
// protocol minor.
func NewLogChannel(e *Encoder, minor uint64) *LogChannel {
	return &LogChannel{enc: e, minor: minor}
}

// ErrClientGone is returned once writing to the client has failed.
var ErrClientGone = errors.New("client connection lost")

// send writes one message (already encoded by f) now or queues it.
func (l *LogChannel) send(f func(e *Encoder)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	if l.working {
		f(l.enc)
		if err := l.enc.Flush(); err != nil {
			l.err = err
			l.working = false
		}
		return
	}
	var buf bytesBuffer
	e := NewEncoder(&buf)
	f(e)
	e.Flush()
	l.pending = append(l.pending, buf.b)
}

type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }

// StartWork opens the channel for an operation and sends what was queued.
func (l *LogChannel) StartWork() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	l.working = true
	for _, m := range l.pending {
		l.enc.write(m)
	}
	l.pending = nil
	if err := l.enc.Flush(); err != nil {
		l.err = err
		return err
	}
	return nil
}

// Working reports whether an operation is between StartWork and StopWork.
func (l *LogChannel) Working() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.working
}

// StopWork ends the operation: STDERR_LAST if err is nil, else
// STDERR_ERROR carrying err's message (and traces, if err has them).
// The caller flushes after writing its reply.
func (l *LogChannel) StopWork(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.working = false
	if err == nil {
		l.enc.Uint64(StderrLast)
		return
	}
	l.enc.Uint64(StderrError)
	msg, traces := err.Error(), []string(nil)
	var te Traced
	if errors.As(err, &te) {
		msg, traces = te.NixMessage()
	}
	if l.minor >= 26 {
		l.enc.String("Error")
		l.enc.Uint64(LvlError)
		l.enc.String("Error")
		l.enc.String(msg)
		l.enc.Uint64(0) // no position
		l.enc.Uint64(uint64(len(traces)))
		for _, t := range traces {
			l.enc.Uint64(0)
			l.enc.String(t)
		}
		return
	}
	l.enc.String(msg)
	l.enc.Uint64(1) // exit status
}

// Traced is an error with Nix's error traces (context lines).
type Traced interface {
	NixMessage() (msg string, traces []string)
}

// Log sends a log line (STDERR_NEXT). The caller filters by verbosity.
func (l *LogChannel) Log(msg string) {
	l.send(func(e *Encoder) {
		e.Uint64(StderrNext)
		e.String(msg + "\n")
	})
}

// StartActivity announces an activity (protocol ≥ 1.20; older clients
// get its text as a log line).
func (l *LogChannel) StartActivity(id, level, typ uint64, text string, fields []Field, parent uint64) {
	if l.minor < 20 {
		if text != "" {
			l.Log(text + "...")
		}
		return
	}
	l.send(func(e *Encoder) {
		e.Uint64(StderrStartActivity)
		e.Uint64(id)
		e.Uint64(level)
		e.Uint64(typ)
		e.String(text)
		writeFields(e, fields)
		e.Uint64(parent)
	})
}

// StopActivity ends an activity.
func (l *LogChannel) StopActivity(id uint64) {
	if l.minor < 20 {
		return
	}
	l.send(func(e *Encoder) {
		e.Uint64(StderrStopActivity)
		e.Uint64(id)
	})
}

// Result sends a result of an activity (a build log line, progress).
func (l *LogChannel) Result(id, typ uint64, fields []Field) {
	if l.minor < 20 {
		return
	}
	l.send(func(e *Encoder) {
		e.Uint64(StderrResult)
		e.Uint64(id)
		e.Uint64(typ)
		writeFields(e, fields)
	})
}

func writeFields(e *Encoder, fields []Field) {
	e.Uint64(uint64(len(fields)))
	for _, f := range fields {
		if f.IsStr {
			e.Uint64(fieldString)
			e.String(f.Str)
		} else {
			e.Uint64(fieldInt)
			e.Uint64(f.Int)
		}
	}
}

// Activity types (Nix's ActivityType).
const (
	ActUnknown      uint64 = 0
	ActCopyPath     uint64 = 100
	ActFileTransfer uint64 = 101
	ActRealise      uint64 = 102
	ActCopyPaths    uint64 = 103
	ActBuilds       uint64 = 104
	ActBuild        uint64 = 105
	ActOptimise     uint64 = 106
	ActVerifyPaths  uint64 = 107
	ActSubstitute   uint64 = 108
	ActQueryPath    uint64 = 109
	ActPostBuild    uint64 = 110
	ActBuildWaiting uint64 = 111
)

// Result types (Nix's ResultType).
const (
	ResFileLinked       uint64 = 100
	ResBuildLogLine     uint64 = 101
	ResUntrustedPath    uint64 = 102
	ResCorruptedPath    uint64 = 103
	ResSetPhase         uint64 = 104
	ResProgress         uint64 = 105
	ResSetExpected      uint64 = 106
	ResPostBuildLogLine uint64 = 107
)

// RequestData asks the client for up to n bytes (STDERR_READ); the client
// answers with a string. Only old protocols (before 1.23) tunnel uploads.
func (l *LogChannel) RequestData(n uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if !l.working {
		return errors.New("worker: data requested outside an operation")
	}
	l.enc.Uint64(StderrRead)
	l.enc.Uint64(n)
	if err := l.enc.Flush(); err != nil {
		l.err = err
		return err
	}
	return nil
}
