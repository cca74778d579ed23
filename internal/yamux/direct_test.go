package yamux

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// boundedConn bounds each of its writes with a deadline, as Tether's
// session conns do, and says so: streams on it write directly.
type boundedConn struct {
	net.Conn
	bound time.Duration
}

func (c *boundedConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.bound))
	return c.Conn.Write(b)
}

func (c *boundedConn) WritesBounded() bool { return true }

// testConnDirect is a TCP pair whose writes are bounded.
func testConnDirect(t testing.TB) (io.ReadWriteCloser, io.ReadWriteCloser) {
	c, s := testConnTCP(t)
	return &boundedConn{Conn: c.(net.Conn), bound: 10 * time.Second},
		&boundedConn{Conn: s.(net.Conn), bound: 10 * time.Second}
}

// TestDirect_ManyStreams writes on many streams at once, each from its
// own goroutine in writes of every size, so that direct writes, frames
// handed to the writer while another writes, and the gathering of both
// meet; every stream's bytes must arrive whole and in order.
func TestDirect_ManyStreams(t *testing.T) {
	c, s := testConnDirect(t)
	// A frame queued behind others' writes waits for them: under the race
	// detector sixteen streams' megabytes take longer than testConf's
	// 250 ms, and this test is about the bytes, not that bound.
	conf := testConfNoKeepAlive()
	conf.ConnectionWriteTimeout = 10 * time.Second
	client, server := testClientServerConfig(t, c, s, conf, conf.Clone())
	if !client.direct || !server.direct {
		t.Fatal("a conn that bounds its writes did not turn direct writes on")
	}
	const streams, size = 16, 1 << 20
	errCh := make(chan error, 2*streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(2)
		go func() {
			defer wg.Done()
			st, err := server.AcceptStream()
			if err != nil {
				errCh <- err
				return
			}
			defer st.Close()
			h := sha256.New()
			n, err := io.Copy(h, st)
			if err != nil || n != size {
				errCh <- fmt.Errorf("read %d bytes: %v", n, err)
				return
			}
			// The sum goes back on the same stream: the server writes too.
			if _, err := st.Write(h.Sum(nil)); err != nil {
				errCh <- err
			}
		}()
		go func() {
			defer wg.Done()
			st, err := client.OpenStream()
			if err != nil {
				errCh <- err
				return
			}
			defer st.Close()
			data := make([]byte, size)
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			for off := 0; off < size; {
				n := 1 + rng.IntN(300<<10)
				if n > size-off {
					n = size - off
				}
				if _, err := st.Write(data[off : off+n]); err != nil {
					errCh <- err
					return
				}
				off += n
			}
			if err := st.Close(); err != nil { // FIN: the read side stays open
				errCh <- err
				return
			}
			sum, err := io.ReadAll(st)
			want := sha256.Sum256(data)
			if err != nil || !bytes.Equal(sum, want[:]) {
				errCh <- fmt.Errorf("stream %d: bytes differ (%v)", i, err)
			}
		}()
	}
	wg.Wait()
	close(errCh)
	for err := range errCh {
		t.Error(err)
	}
}

// TestDirect_StuckConn writes directly on a conn whose peer never reads:
// the write gives up at the conn's bound, and the session, whose conn may
// now hold part of a frame, ends.
func TestDirect_StuckConn(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	conf := testConfNoKeepAlive()
	conf.ConnectionWriteTimeout = time.Hour // the conn's bound must be what ends it
	client, err := Client(&boundedConn{Conn: a, bound: 100 * time.Millisecond}, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	done := make(chan error, 1)
	go func() {
		_, err := client.OpenStream()
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a stream opened on a conn nobody reads")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a direct write outlived its conn's bound")
	}
	select {
	case <-client.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the session outlived its broken conn")
	}
}

// BenchmarkPingPongDirect echoes 1 KiB messages on streams many at once
// over loopback TCP, with direct writes and through the session's writer
// alone: one op is one round trip on one stream.
func BenchmarkPingPongDirect(b *testing.B) {
	for _, streams := range []int{1, 100} {
		for _, direct := range []bool{false, true} {
			b.Run(fmt.Sprintf("streams=%d/direct=%v", streams, direct), func(b *testing.B) {
				benchPingPong(b, streams, direct)
			})
		}
	}
}

// plainConn hides boundedConn's WritesBounded: frames go through sendLoop.
type plainConn struct{ net.Conn }

func benchPingPong(b *testing.B, streams int, direct bool) {
	c, s := testConnDirect(b)
	if !direct {
		c, s = plainConn{c.(*boundedConn)}, plainConn{s.(*boundedConn)}
	}
	conf := testConfNoKeepAlive()
	conf.ConnectionWriteTimeout = 10 * time.Second
	client, server := testClientServerConfig(b, c, s, conf, conf.Clone())
	go func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				buf := make([]byte, 1024)
				for {
					if _, err := io.ReadFull(st, buf); err != nil {
						return
					}
					if _, err := st.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	conns := make([]*Stream, streams)
	for i := range conns {
		st, err := client.OpenStream()
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		conns[i] = st
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/streams + 1
	for _, st := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1024)
			for range per {
				if _, err := st.Write(buf); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(st, buf); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
