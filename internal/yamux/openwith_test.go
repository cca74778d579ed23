package yamux

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"
)

// frameCounter counts the frames a session writes on a pipe, by their
// headers' types and flags.
type frameCounter struct {
	io.ReadWriteCloser
	mu     sync.Mutex
	writes [][]byte
}

func (c *frameCounter) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, append([]byte(nil), b...))
	c.mu.Unlock()
	return c.ReadWriteCloser.Write(b)
}

// frames parses what was written into frame headers.
func (c *frameCounter) frames() []header {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []byte
	for _, w := range c.writes {
		all = append(all, w...)
	}
	var out []header
	for len(all) >= headerSize {
		h := header(all[:headerSize])
		n := headerSize
		if h.MsgType() == typeData {
			n += int(h.Length())
		}
		out = append(out, h)
		all = all[n:]
	}
	return out
}

// OpenStreamWith's first bytes open the stream: one data frame with the
// SYN, which the peer accepts with the bytes to read, and acknowledges.
func TestOpenStreamWithOneFrame(t *testing.T) {
	cc, sc := testConnPipe(t)
	counted := &frameCounter{ReadWriteCloser: cc}
	conf := testConfNoKeepAlive()
	conf.StreamOpenTimeout = time.Minute
	client, server := testClientServerConfig(t, counted, sc, conf, testConfNoKeepAlive())

	st, err := client.OpenStreamWith([]byte("header"))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "header" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	// The ACK arrives: the open timer stops and the SYN's credit is back.
	select {
	case <-st.establishCh:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream was never acknowledged")
	}
	if n := len(client.synCh); n != 0 {
		t.Fatalf("%d SYNs in flight after the ACK", n)
	}
	fr := counted.frames()
	if len(fr) != 1 || fr[0].MsgType() != typeData || fr[0].Flags() != flagSYN || fr[0].Length() != 6 {
		t.Fatalf("frames opening the stream: %v, want one data frame of 6 bytes with SYN", fr)
	}
	// The stream goes on as any other, both ways.
	if _, err := peer.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, got); err != nil || string(got) != "answer" {
		t.Fatalf("opener read %q, %v", got, err)
	}
}

// With a window larger than the protocol's initial one, the window update
// announcing it opens the stream first: the peer may send it all at once.
func TestOpenStreamWithLargeWindow(t *testing.T) {
	conf := testConfNoKeepAlive()
	conf.MaxStreamWindowSize = 4 * initialStreamWindow
	cc, sc := testConnPipe(t)
	client, server := testClientServerConfig(t, cc, sc, conf, conf.Clone())

	st, err := client.OpenStreamWith([]byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "hi" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	big := bytes.Repeat([]byte{7}, int(conf.MaxStreamWindowSize))
	if w, err := peer.SendWindow(); err != nil || w != int(conf.MaxStreamWindowSize) {
		t.Fatalf("peer's send window %d, %v; want %d", w, err, conf.MaxStreamWindowSize)
	}
	go peer.Write(big)
	back := make([]byte, len(big))
	if _, err := io.ReadFull(st, back); err != nil || !bytes.Equal(back, big) {
		t.Fatalf("opener read %d bytes, %v", len(back), err)
	}
}

func TestOpenStreamWithNothing(t *testing.T) {
	client, _ := testClientServer(t)
	if _, err := client.OpenStreamWith(nil); err == nil {
		t.Fatal("no error for a stream opened with no bytes")
	}
	if n := len(client.synCh); n != 0 {
		t.Fatalf("%d SYNs in flight after a refused open", n)
	}
}
