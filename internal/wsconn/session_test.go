package wsconn

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

// TestOnSessionZeroMask: a session stream's frames, from Write and from
// ReadFrom alike, are masked frames whose key is zero, their payload as
// written: the session's own frame masks them once, on the wire.
func TestOnSessionZeroMask(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := OnSession(a)
	small, large := []byte("hello"), bytes.Repeat([]byte("x"), 70000)
	go func() {
		c.Write(small)
		c.ReadFrom(strings.NewReader(string(large)))
	}()
	var got []byte
	for len(got) < len(small)+len(large) {
		h, p, err := readFrame(b)
		if err != nil {
			t.Fatal(err)
		}
		if !h.Masked || h.Mask != [4]byte{} {
			t.Fatalf("frame masked %v with key %v, want masked with a zero key", h.Masked, h.Mask)
		}
		got = append(got, p...)
	}
	if want := append(small, large...); !bytes.Equal(got, want) {
		t.Fatalf("the %d bytes read differ from the %d written", len(got), len(want))
	}
}
