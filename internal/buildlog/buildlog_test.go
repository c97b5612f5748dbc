package buildlog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// recorder renders what a Sink receives as one string per event.
type recorder struct{ events []string }

func (r *recorder) Line(s string)  { r.events = append(r.events, "line "+s) }
func (r *recorder) Phase(p string) { r.events = append(r.events, "phase "+p) }
func (r *recorder) Message(l uint64, m string) {
	r.events = append(r.events, fmt.Sprintf("msg %d %s", l, m))
}
func (r *recorder) StartActivity(id, level, typ uint64, text string, fields []Field) {
	r.events = append(r.events, fmt.Sprintf("start %d %s %s", typ, text, fieldString(fields)))
}
func (r *recorder) StopActivity(id uint64) { r.events = append(r.events, "stop") }
func (r *recorder) Result(id, typ uint64, fields []Field) {
	r.events = append(r.events, fmt.Sprintf("result %d %s", typ, fieldString(fields)))
}
func (r *recorder) BadMessage(err error) { r.events = append(r.events, "bad") }

func fieldString(fs []Field) string {
	var parts []string
	for _, f := range fs {
		if f.IsString {
			parts = append(parts, "s:"+f.Str)
		} else {
			parts = append(parts, fmt.Sprint(f.Int))
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

const script = `printf 'abc\rX\n'
printf 'line2\n'
echo '@nix {"action":"setPhase","phase":"buildPhase"}'
echo '@nix {"action":"msg","level":0,"msg":"hello from builder"}'
echo '@nix {"action":"start","id":12345,"level":3,"type":101,"text":"downloading","fields":["u",7]}'
echo '@nix {"action":"result","id":12345,"type":105,"fields":[10,20,0,0]}'
echo '@nix {"action":"stop","id":12345}'
echo '@nix {"action":"start","id":99,"level":3,"type":105,"text":"not allowed","fields":[]}'
echo '@nix {"action":"result","id":99,"type":105,"fields":[1]}'
echo '@nix not json'
printf 'progress 1\rprogress 22\rp3\n'
printf '\n'
printf 'tab\there\n'
mkdir $out
printf 'no newline at end'`

// TestMatchesNix feeds the raw log of a real Nix build (nix-store -l) to
// Lines and compares what comes out with what Nix itself reported for the
// same build (nix build --log-format internal-json).
func TestMatchesNix(t *testing.T) {
	n := nixtest.Require(t)
	expr := fmt.Sprintf(`derivation { name = "log-%s"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" %q]; PATH = "/usr/bin:/bin"; }`, nixtest.Nonce(), script)
	drv := strings.TrimSpace(n.Run("nix-instantiate", "--expr", expr))
	cmd := n.Command(t.Context(), "nix", "build", "--no-link", "-L", "--log-format", "internal-json", drv)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var want []string
	buildAct, child := uint64(0), uint64(0)
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "@nix ")
		if !ok {
			continue
		}
		var m struct {
			Action string            `json:"action"`
			ID     uint64            `json:"id"`
			Type   uint64            `json:"type"`
			Level  uint64            `json:"level"`
			Text   string            `json:"text"`
			Msg    string            `json:"msg"`
			Fields []json.RawMessage `json:"fields"`
			Parent uint64            `json:"parent"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		var fs []string
		for _, f := range m.Fields {
			var s string
			if json.Unmarshal(f, &s) == nil {
				fs = append(fs, "s:"+s)
			} else {
				fs = append(fs, string(f))
			}
		}
		fields := "[" + strings.Join(fs, ",") + "]"
		switch {
		case m.Action == "start" && m.Type == 105: // actBuild
			buildAct = m.ID
		case m.Action == "start" && m.Type == ActFileTransfer && buildAct != 0: // the JSON logger omits the parent
			child = m.ID
			want = append(want, fmt.Sprintf("start %d %s %s", m.Type, m.Text, fields))
		case m.Action == "result" && m.ID == buildAct && m.Type == ResBuildLogLine:
			want = append(want, "line "+strings.TrimPrefix(fs[0], "s:"))
		case m.Action == "result" && m.ID == buildAct && m.Type == ResSetPhase:
			want = append(want, "phase "+strings.TrimPrefix(fs[0], "s:"))
		case m.Action == "result" && m.ID == child && child != 0:
			want = append(want, fmt.Sprintf("result %d %s", m.Type, fields))
		case m.Action == "msg" && strings.HasPrefix(m.Msg, "bad JSON log message from builder"):
			want = append(want, "bad")
		case m.Action == "msg" && buildAct != 0 && !strings.Contains(m.Msg, "building '"):
			want = append(want, fmt.Sprintf("msg %d %s", m.Level, m.Msg))
		case m.Action == "stop" && m.ID == child && child != 0:
			want = append(want, "stop")
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	raw := n.Run("nix-store", "-l", drv)
	rec := &recorder{}
	l := NewLines(rec, 3, 0)
	// Feed in small chunks: lines must not depend on how reads split them.
	for i := 0; i < len(raw); i += 7 {
		if _, err := l.Write([]byte(raw[i:min(i+7, len(raw))])); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	if diff := cmp.Diff(want, rec.events); diff != "" {
		t.Errorf("events differ from Nix's (-nix +silo):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"", "tab\there", "no newline at end"}, l.Tail()); diff != "" {
		t.Errorf("tail (-want +got):\n%s", diff)
	}
}

func TestLogLimit(t *testing.T) {
	l := NewLines(&recorder{}, 10, 10)
	if _, err := l.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write([]byte("x")); err == nil {
		t.Error("no error past the limit")
	}
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	p, err := storepath.DefaultDir.Parse("/nix/store/f8s3gd55sypmhay5ffcpqw1cn2cjl5a1-simple.drv")
	if err != nil {
		t.Fatal(err)
	}
	want := dir + "/drvs/f8/s3gd55sypmhay5ffcpqw1cn2cjl5a1-simple.drv"
	if got := Path(dir, p); got != want {
		t.Errorf("Path = %s, want %s", got, want)
	}
	os.MkdirAll(dir+"/drvs/f8", 0o755)
	os.WriteFile(want+".bz2", []byte("stale"), 0o644)
	f, err := Create(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("log\n")
	f.Close()
	if _, err := os.Stat(want + ".bz2"); !os.IsNotExist(err) {
		t.Errorf("stale .bz2 log kept: %v", err)
	}
}

// TestNixReadsTheLog checks that the real Nix shows a log silo wrote.
func TestNixReadsTheLog(t *testing.T) {
	n := nixtest.Require(t)
	expr := fmt.Sprintf(`derivation { name = "log-read-%s"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo > $out"]; }`, nixtest.Nonce())
	drv := strings.TrimSpace(n.Run("nix-instantiate", "--expr", expr))
	p, err := storepath.DefaultDir.Parse(drv)
	if err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir()
	f, err := Create(logDir, p)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("written by silo\n")
	f.Close()
	cmd := n.Command(t.Context(), "nix-store", "-l", drv)
	cmd.Env = append(cmd.Env, "NIX_LOG_DIR="+logDir)
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "written by silo\n" {
		t.Errorf("nix-store -l = %q, %v", out, err)
	}
}
