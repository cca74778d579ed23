package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// Frames read back as written, however the stream cuts them: one byte
// at a time here.
func TestTermFramesRoundTrip(t *testing.T) {
	var b []byte
	b = append(b, TermHelloFrame()...)
	b = append(b, TermResizeFrame(40, 132)...)
	b = AppendTermFrame(b, TermData, []byte("╔═╗ 🙂\r\n"))
	b = AppendTermFrame(b, 99, []byte("a later version's frame"))
	b = AppendTermFrame(b, TermData, bytes.Repeat([]byte{'x'}, TermMaxPayload))
	b = append(b, TermExitFrame(3, "")...)
	b = append(b, TermExitFrame(-1, "idle for 30m0s")...)

	r := NewTermReader(iotest.OneByteReader(bytes.NewReader(b)))
	if err := r.ReadHello(); err != nil {
		t.Fatal(err)
	}
	typ, p, err := r.Next()
	if rows, cols, perr := ParseTermResize(p); err != nil || typ != TermResize || perr != nil || rows != 40 || cols != 132 {
		t.Fatalf("resize: %d %v %d×%d %v %v", typ, p, rows, cols, err, perr)
	}
	typ, p, _ = r.Next()
	if typ != TermData || string(p) != "╔═╗ 🙂\r\n" {
		t.Fatalf("data: %d %q", typ, p)
	}
	if typ, _, _ = r.Next(); typ != 99 {
		t.Fatalf("unknown frame: type %d", typ)
	}
	if typ, p, _ = r.Next(); typ != TermData || len(p) != TermMaxPayload {
		t.Fatalf("longest frame: type %d, %d bytes", typ, len(p))
	}
	for _, want := range []struct {
		status int32
		why    string
	}{{3, ""}, {-1, "idle for 30m0s"}} {
		typ, p, _ = r.Next()
		status, why, err := ParseTermExit(p)
		if typ != TermExit || err != nil || status != want.status || why != want.why {
			t.Fatalf("exit: type %d, %d %q %v; want %d %q", typ, status, why, err, want.status, want.why)
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

// A stream that is not a terminal's is told at its first bytes, without
// waiting for more than a frame header; bad payloads are errors.
func TestTermNotTerminal(t *testing.T) {
	for _, in := range []string{
		"SSH-2.0-OpenSSH_9.2\r\n",          // sshd's banner
		"HTTP/1.1 400 Bad Request\r\n\r\n", // a web server
		"\x01\xff\xff",                     // a hello too long to be one
		"\x02\x00\x01x",                    // data before the hello
		"\x01\x00\x05hello",                // a hello of another protocol
		"\x01\x00",                         // cut short
	} {
		err := NewTermReader(strings.NewReader(in)).ReadHello()
		if !errors.Is(err, ErrNotTerminal) {
			t.Errorf("%q: %v, want ErrNotTerminal", in, err)
		}
	}
	if err := NewTermReader(strings.NewReader("")).ReadHello(); err != io.EOF {
		t.Errorf("empty stream: %v, want EOF", err)
	}
	hello2 := AppendTermFrame(nil, TermHello, []byte("tether-term/2 more"))
	if err := NewTermReader(bytes.NewReader(hello2)).ReadHello(); err == nil || errors.Is(err, ErrNotTerminal) || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("version 2: %v, want an error naming the version", err)
	}
	hello1 := AppendTermFrame(nil, TermHello, []byte("tether-term/1 later-fields"))
	if err := NewTermReader(bytes.NewReader(hello1)).ReadHello(); err != nil {
		t.Errorf("version 1 with more after it: %v", err)
	}
	if _, _, err := ParseTermResize([]byte{1, 2, 3}); err == nil {
		t.Error("a 3-byte resize parsed")
	}
	if _, _, err := ParseTermExit([]byte{1}); err == nil {
		t.Error("a 1-byte exit parsed")
	}
	cut := TermResizeFrame(1, 2)[:5]
	if _, _, err := NewTermReader(bytes.NewReader(cut)).Next(); err != io.ErrUnexpectedEOF {
		t.Errorf("a frame cut short: %v, want ErrUnexpectedEOF", err)
	}
}

// FuzzTermReader: any bytes give frames or an error, never a panic, and
// every frame fits the header's length.
func FuzzTermReader(f *testing.F) {
	f.Add(append(TermHelloFrame(), TermResizeFrame(24, 80)...))
	f.Add(TermExitFrame(0, "why"))
	f.Add([]byte("SSH-2.0-x\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewTermReader(bytes.NewReader(b))
		_ = r.ReadHello()
		for range 1000 {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			switch typ {
			case TermResize:
				_, _, _ = ParseTermResize(p)
			case TermExit:
				_, _, _ = ParseTermExit(p)
			case TermHello:
				_ = CheckTermHello(p)
			}
		}
	})
}
