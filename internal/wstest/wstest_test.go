package wstest

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// TestReadFrameBound: a frame up to the limit reads whole, with its mask
// left as sent; one declaring more is refused before its payload is read.
func TestReadFrameBound(t *testing.T) {
	var b bytes.Buffer
	sent := ws.MaskFrame(ws.NewBinaryFrame([]byte("0123456789")))
	if err := ws.WriteFrame(&b, sent); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFrame(&b, 10)
	if err != nil {
		t.Fatalf("a frame at the limit: %v", err)
	}
	if !f.Header.Masked || f.Header.Mask != sent.Header.Mask || !bytes.Equal(f.Payload, sent.Payload) {
		t.Fatalf("read %+v %q, want %+v %q", f.Header, f.Payload, sent.Header, sent.Payload)
	}

	b.Reset()
	if err := ws.WriteHeader(&b, ws.Header{OpCode: ws.OpBinary, Fin: true, Length: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	b.WriteString("rest")
	f, err = ReadFrame(&b, 10)
	if err == nil || !strings.Contains(err.Error(), "more than 10") || f.Header.Length != 1<<40 {
		t.Fatalf("a frame declaring 1 TiB: %+v, %v", f.Header, err)
	}
	if b.String() != "rest" {
		t.Fatalf("the refused frame's payload was read: %q left", b.String())
	}

	b.Reset()
	ws.WriteHeader(&b, ws.Header{OpCode: ws.OpBinary, Fin: true, Length: 4})
	b.WriteString("ab")
	if _, err := ReadFrame(&b, 10); err != io.ErrUnexpectedEOF {
		t.Fatalf("a cut payload: %v, want %v", err, io.ErrUnexpectedEOF)
	}
}
