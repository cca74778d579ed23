package yamux

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// TestRecvBufferBound feeds frames of random sizes, with reads of random
// sizes between them, as the receive window allows them, and checks that
// the bytes come out in order and the buffer never grows past the window.
func TestRecvBufferBound(t *testing.T) {
	const limit = 256 << 10
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]byte, 8<<20)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	r := bytes.NewReader(src)
	var (
		b    recvBuffer
		out  []byte
		read = make([]byte, limit)
	)
	for r.Len() > 0 {
		room := limit - b.Len()
		if room > 0 {
			n := 1 + rng.IntN(room)
			if n > r.Len() {
				n = r.Len()
			}
			if err := b.readFrame(r, n, limit); err != nil {
				t.Fatal(err)
			}
		}
		if c := b.Cap(); c > limit {
			t.Fatalf("capacity %d with %d unread, over the window %d", c, b.Len(), limit)
		}
		if rng.IntN(3) == 0 || b.Len() == limit {
			n, _ := b.Read(read[:1+rng.IntN(limit)])
			out = append(out, read[:n]...)
		}
	}
	for b.Len() > 0 {
		n, _ := b.Read(read)
		out = append(out, read[:n]...)
	}
	if !bytes.Equal(out, src) {
		t.Fatal("the bytes read are not the bytes received")
	}
	if _, err := b.Read(read); err != io.EOF {
		t.Fatalf("Read of an empty buffer: %v, want io.EOF", err)
	}
}

// TestRecvBufferShortFrame: a connection that ends inside a frame is an
// error, and the buffer keeps only whole frames.
func TestRecvBufferShortFrame(t *testing.T) {
	var b recvBuffer
	if err := b.readFrame(bytes.NewReader([]byte("abc")), 3, 16); err != nil {
		t.Fatal(err)
	}
	if err := b.readFrame(bytes.NewReader([]byte("de")), 4, 16); err != io.ErrUnexpectedEOF {
		t.Fatalf("a short frame: %v, want io.ErrUnexpectedEOF", err)
	}
	got, _ := io.ReadAll(&b)
	if string(got) != "abc" {
		t.Fatalf("buffer holds %q, want %q", got, "abc")
	}
}

// TestStalledStreamHoldsWindow: a stream whose reader does not read holds
// a full window in a buffer no larger than the window, on a session whose
// window is the initial one and on one whose window is larger; and again
// after half of it was read and the sender filled it up once more.
func TestStalledStreamHoldsWindow(t *testing.T) {
	for _, window := range []uint32{initialStreamWindow, 4 * initialStreamWindow} {
		t.Run(fmt.Sprintf("window %d KiB", window>>10), func(t *testing.T) {
			conf := testConfNoKeepAlive()
			conf.ConnectionWriteTimeout = 10 * time.Second
			conf.MaxStreamWindowSize = window
			c, s := testConnTCP(t)
			client, server := testClientServerConfig(t, c, s, conf, conf.Clone())

			rng := rand.New(rand.NewPCG(3, 4))
			data := make([]byte, 2*window)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			cs, err := client.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			// Odd sizes, so that frames end anywhere in the buffer.
			write := func(p []byte) <-chan error {
				done := make(chan error, 1)
				go func() {
					sizes := []int{1, 1000, 4096, 65536, 12345, 100003}
					for i := 0; len(p) > 0; i++ {
						n := sizes[i%len(sizes)]
						if n > len(p) {
							n = len(p)
						}
						if _, err := cs.Write(p[:n]); err != nil {
							done <- err
							return
						}
						p = p[n:]
					}
					done <- nil
				}()
				return done
			}
			done := write(data[:window])
			ss, err := server.AcceptStream()
			if err != nil {
				t.Fatal(err)
			}
			defer ss.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			full := func() {
				t.Helper()
				waitBuffered(t, ss, int(window))
				ss.recvLock.Lock()
				c := ss.recvBuf.Cap()
				ss.recvLock.Unlock()
				if c > int(window) {
					t.Fatalf("a full window of %d bytes unread in a buffer of %d", window, c)
				}
			}
			full()

			got := make([]byte, 0, len(data))
			got = readN(t, ss, got, int(window/2))
			if err := <-write(data[window : window+window/2]); err != nil {
				t.Fatal(err)
			}
			full()
			got = readN(t, ss, got, int(window))
			if err := <-write(data[window+window/2:]); err != nil {
				t.Fatal(err)
			}
			got = readN(t, ss, got, int(window/2))
			if !bytes.Equal(got, data) {
				t.Fatal("the stream's bytes came out changed")
			}
		})
	}
}

// waitBuffered waits until st holds n unread bytes. Nothing tells when a
// frame was buffered, so it polls, within a deadline.
func waitBuffered(t *testing.T, st *Stream, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st.recvLock.Lock()
		have := 0
		if st.recvBuf != nil {
			have = st.recvBuf.Len()
		}
		st.recvLock.Unlock()
		if have == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes buffered after 10 s, want %d", have, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// readN appends n bytes read from st to p.
func readN(t *testing.T, st *Stream, p []byte, n int) []byte {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(st, buf); err != nil {
		t.Fatal(err)
	}
	return append(p, buf...)
}
