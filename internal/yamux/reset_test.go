package yamux

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// streamPair is a stream between two sessions over TCP on loopback, each
// side's end of it, and the sessions.
func streamPair(t *testing.T) (client, server *Session, cs, ss *Stream) {
	t.Helper()
	conf := testConfNoKeepAlive()
	conf.ConnectionWriteTimeout = 10 * time.Second
	c, s := testConnTCP(t)
	client, server = testClientServerConfig(t, c, s, conf, conf.Clone())
	cs, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// The first bytes go with the SYN, so that the server has a stream to
	// accept, as Tether's headers do.
	if _, err := cs.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if ss, err = server.AcceptStream(); err != nil {
		t.Fatal(err)
	}
	waitBuffered(t, ss, len("hello"))
	return client, server, cs, ss
}

// TestReset: a reset drops what the stream received and did not read, the
// peer's reads and writes fail with ErrConnectionReset once its RST came,
// and both sessions forget the stream.
func TestReset(t *testing.T) {
	client, server, cs, ss := streamPair(t)
	if err := ss.Reset(); err != nil {
		t.Fatal(err)
	}
	ss.recvLock.Lock()
	held := ss.recvBuf
	ss.recvLock.Unlock()
	if held != nil {
		t.Errorf("a reset stream holds %d unread bytes", held.Len())
	}
	if _, err := ss.Read(make([]byte, 8)); !errors.Is(err, ErrConnectionReset) {
		t.Errorf("Read after Reset: %v, want ErrConnectionReset", err)
	}
	if _, err := ss.Write([]byte("x")); !errors.Is(err, ErrConnectionReset) {
		t.Errorf("Write after Reset: %v, want ErrConnectionReset", err)
	}
	if n := server.NumStreams(); n != 0 {
		t.Errorf("the resetting session keeps %d streams", n)
	}

	// The peer learns it from the RST: its blocked read ends.
	cs.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := cs.Read(make([]byte, 8)); !errors.Is(err, ErrConnectionReset) {
		t.Errorf("the peer's Read: %v, want ErrConnectionReset", err)
	}
	if _, err := cs.Write([]byte("more")); !errors.Is(err, ErrConnectionReset) {
		t.Errorf("the peer's Write: %v, want ErrConnectionReset", err)
	}
	if n := client.NumStreams(); n != 0 {
		t.Errorf("the peer's session keeps %d streams", n)
	}
	if err := ss.Reset(); err != nil {
		t.Errorf("a second Reset: %v", err)
	}

	// The session goes on: a new stream carries bytes both ways.
	cs2, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer cs2.Close()
	if _, err := cs2.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	ss2, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	defer ss2.Close()
	if got := readN(t, ss2, nil, len("again")); !bytes.Equal(got, []byte("again")) {
		t.Errorf("the next stream read %q", got)
	}
}

// TestResetUnblocksWriter: a writer blocked on a peer that does not read
// returns ErrConnectionReset when its own stream is reset, and a writer
// on the peer's side is stopped by the RST.
func TestResetUnblocksWriter(t *testing.T) {
	_, _, cs, ss := streamPair(t)
	if got := readN(t, ss, nil, len("hello")); string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	big := make([]byte, 4*initialStreamWindow)
	write := func(st *Stream) <-chan error {
		done := make(chan error, 1)
		go func() {
			st.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, err := st.Write(big)
			done <- err
		}()
		return done
	}
	own, peer := write(cs), write(ss)
	// Neither side reads: both writers block once the windows are full.
	waitBuffered(t, ss, int(initialStreamWindow)-len("hello"))
	waitBuffered(t, cs, int(initialStreamWindow))
	if err := cs.Reset(); err != nil {
		t.Fatal(err)
	}
	for name, done := range map[string]<-chan error{"the resetting side's": own, "the peer's": peer} {
		select {
		case err := <-done:
			if !errors.Is(err, ErrConnectionReset) {
				t.Errorf("%s blocked Write: %v, want ErrConnectionReset", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s blocked Write still blocked", name)
		}
	}
}

// TestResetAfterEnd: Reset of a stream closed both ways sends nothing and
// changes nothing.
func TestResetAfterEnd(t *testing.T) {
	client, _, cs, ss := streamPair(t)
	cs.Close()
	ss.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(ss); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v before the peer's FIN", got, err)
	}
	ss.Close()
	deadline := time.Now().Add(10 * time.Second)
	for client.NumStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream did not end on both sides")
		}
		time.Sleep(time.Millisecond)
	}
	if err := cs.Reset(); err != nil {
		t.Fatal(err)
	}
	cs.stateLock.Lock()
	state := cs.state
	cs.stateLock.Unlock()
	if state != streamClosed {
		t.Errorf("Reset changed an ended stream's state to %d", state)
	}
}
