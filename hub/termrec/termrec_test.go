package termrec

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/tether-io/tether/wire"
)

func newRecorder(t *testing.T) *Recorder {
	t.Helper()
	r, err := New(t.TempDir()+"/recordings", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// castLines reads a recording: its header and its events.
func castLines(t *testing.T, r *Recorder, id string) (header map[string]any, events [][]any) {
	t.Helper()
	f, err := r.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Mode().Perm() != 0o600 {
		t.Errorf("recording mode %v, want 0600", st.Mode().Perm())
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if header == nil {
			if err := json.Unmarshal(sc.Bytes(), &header); err != nil {
				t.Fatalf("header %s: %v", sc.Text(), err)
			}
			continue
		}
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("event %s: %v", sc.Text(), err)
		}
		events = append(events, ev)
	}
	return header, events
}

// A terminal session is recorded as the viewer saw it, whatever the
// pieces the relay passes on: the size as a header and resizes, the
// output with characters cut between frames whole, and no keys.
func TestRecordsTerminalSession(t *testing.T) {
	r := newRecorder(t)
	s := r.Tap("STREAM1", "dev1", "shell")
	// The device's hello one byte at a time: the decision waits for it.
	hello := wire.TermHelloFrame()
	for i := range hello {
		s.Data(false, hello[i:i+1])
	}
	s.Data(true, append(wire.TermHelloFrame(), wire.TermResizeFrame(40, 132)...))
	out1 := wire.AppendTermFrame(nil, wire.TermData, []byte("hello \xe2\x95"))
	s.Data(false, out1[:4])
	s.Data(false, out1[4:])
	s.Data(true, wire.AppendTermFrame(nil, wire.TermData, []byte("secret-password\r")))
	s.Data(false, wire.AppendTermFrame(nil, wire.TermData, []byte("\x94 🙂\r\n")))
	s.Data(true, wire.TermResizeFrame(50, 100))
	s.Data(false, wire.TermExitFrame(0, ""))
	s.Close()
	if !s.Recorded() {
		t.Error("a recorded terminal session says it was not recorded")
	}

	h, events := castLines(t, r, "STREAM1")
	if h["version"] != 2.0 || h["width"] != 132.0 || h["height"] != 40.0 {
		t.Errorf("header %v", h)
	}
	var out strings.Builder
	var resizes []string
	for _, ev := range events {
		switch ev[1] {
		case "o":
			out.WriteString(ev[2].(string))
		case "r":
			resizes = append(resizes, ev[2].(string))
		default:
			t.Errorf("event %v", ev)
		}
	}
	if out.String() != "hello ╔ 🙂\r\n" {
		t.Errorf("output %q", out.String())
	}
	if strings.Join(resizes, ",") != "100x50" {
		t.Errorf("resizes %v", resizes)
	}
	b, _ := os.ReadFile(r.Path("STREAM1"))
	if strings.Contains(string(b), "secret") {
		t.Errorf("the recording holds what was typed:\n%s", b)
	}
}

// A stream that is not a terminal's is never recorded: one whose device
// speaks first with other bytes, and one whose service speaks first.
func TestIgnoresPlainStreams(t *testing.T) {
	r := newRecorder(t)
	s := r.Tap("PLAIN1", "dev1", "ssh")
	s.Data(false, []byte("SSH-2.0-OpenSSH_9.2\r\n"))
	s.Data(true, []byte("SSH-2.0-Go\r\n"))
	s.Close()
	s = r.Tap("PLAIN2", "dev1", "web")
	s.Data(true, []byte("GET / HTTP/1.1\r\n\r\n"))
	s.Data(false, wire.TermHelloFrame())
	s.Close()
	if s.Recorded() {
		t.Error("a plain stream says it was recorded")
	}
	for _, id := range []string{"PLAIN1", "PLAIN2"} {
		if _, err := r.Open(id); err != ErrNotFound {
			t.Errorf("%s: %v, want no recording", id, err)
		}
	}
	for _, id := range []string{"", "../x", "a/b", strings.Repeat("A", 65)} {
		if _, err := r.Open(id); err != ErrNotFound {
			t.Errorf("Open(%q): %v, want ErrNotFound", id, err)
		}
	}
}

// FuzzSession: any bytes either way record or not, never panic.
func FuzzSession(f *testing.F) {
	f.Add(wire.TermHelloFrame(), wire.TermResizeFrame(24, 80), []byte("\x02\x00\x03abc"))
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		r, err := New(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		s := r.Tap("FUZZ", "d", "n")
		s.Data(false, a)
		s.Data(true, b)
		s.Data(false, c)
		s.Close()
	})
}
