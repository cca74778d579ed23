package yamux

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// delayedConn delivers what is written to it after a fixed delay, in
// order, as a link with that one-way latency and ample bandwidth would: a
// session over a pair of them has a round trip of twice the delay, which
// a stream's window has to cover.
type delayedConn struct {
	io.ReadWriteCloser
	delay time.Duration
	line  chan delayedChunk
	once  sync.Once
	done  chan struct{}
}

type delayedChunk struct {
	b   []byte
	due time.Time
}

func newDelayedConn(c io.ReadWriteCloser, delay time.Duration) *delayedConn {
	d := &delayedConn{ReadWriteCloser: c, delay: delay, line: make(chan delayedChunk, 1<<16), done: make(chan struct{})}
	go func() {
		for {
			select {
			case <-d.done:
				return
			case ch := <-d.line:
				// The link's latency itself, not a wait for an event.
				time.Sleep(time.Until(ch.due))
				if _, err := c.Write(ch.b); err != nil {
					return
				}
			}
		}
	}()
	return d
}

func (d *delayedConn) Write(b []byte) (int, error) {
	select {
	case <-d.done:
		return 0, io.ErrClosedPipe
	case d.line <- delayedChunk{b: append([]byte(nil), b...), due: time.Now().Add(d.delay)}:
		return len(b), nil
	}
}

func (d *delayedConn) Close() error {
	d.once.Do(func() { close(d.done) })
	return d.ReadWriteCloser.Close()
}

// autoTuneSessions opens a stream from a client that does not auto-tune
// (any yamux peer) to a server that does, across a link of the given
// one-way delay, and returns both ends of it.
func autoTuneSessions(t *testing.T, delay time.Duration, limit uint32) (send, recv *Stream) {
	t.Helper()
	c, s := testConnTCP(t)
	conf := testConfNoKeepAlive()
	conf.ConnectionWriteTimeout = 10 * time.Second
	serverConf := conf.Clone()
	serverConf.StreamWindowGrowthLimit = limit
	client, server := testClientServerConfig(t, newDelayedConn(c, delay), newDelayedConn(s, delay), conf, serverConf)
	send, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { send.Close() })
	if _, err := send.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	if recv, err = server.AcceptStream(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })
	return send, recv
}

// writeUntil writes to st until stop is closed or a write fails (a full
// window blocks it; closing the stream ends it).
func writeUntil(st *Stream, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := st.Write(buf); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// window is the receive window st advertises now.
func window(st *Stream) uint32 {
	st.recvLock.Lock()
	defer st.recvLock.Unlock()
	return st.recvWindowSize()
}

// held is what st holds for its reader: the unread bytes and the
// buffer's capacity.
func held(st *Stream) (unread, capacity int) {
	st.recvLock.Lock()
	defer st.recvLock.Unlock()
	if st.recvBuf == nil {
		return 0, 0
	}
	return st.recvBuf.Len(), st.recvBuf.Cap()
}

// waitFull waits until the sender send has used all its window and all
// it sent arrived: recv holds all it may. Nothing tells when, so it
// polls, within a deadline.
func waitFull(t *testing.T, send, recv *Stream) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		recv.recvLock.Lock()
		credit := recv.recvWindow
		recv.recvLock.Unlock()
		if send.sendWindowLeft() == 0 && credit == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s the sender has %d bytes of window, the receiver %d of credit", send.sendWindowLeft(), credit)
		}
		time.Sleep(time.Millisecond)
	}
}

// sendWindowLeft reads the send window as Write does; Write holds
// sendLock while it waits for window.
func (s *Stream) sendWindowLeft() uint32 {
	return atomic.LoadUint32(&s.sendWindow)
}

// TestAutoTuneFastReaderGrows: a reader that keeps up with a sender the
// window holds back (20 ms each way) grows its window, doubling, to the
// limit; when it then stops reading, it holds at most that window, and
// the window grows no more.
func TestAutoTuneFastReaderGrows(t *testing.T) {
	const limit = 2 << 20
	send, recv := autoTuneSessions(t, 20*time.Millisecond, limit)
	stop := make(chan struct{})
	wrote := writeUntil(send, stop)

	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 64<<10)
	recv.SetReadDeadline(deadline)
	for window(recv) < limit {
		if _, err := recv.Read(buf); err != nil {
			t.Fatalf("read: %v; window %d KiB, not grown to %d KiB in 30 s", err, window(recv)>>10, limit>>10)
		}
	}
	recv.recvLock.Lock()
	rtt := recv.rttMin
	recv.recvLock.Unlock()
	if rtt < 40*time.Millisecond {
		t.Errorf("measured round trip %v, less than the link's 40 ms", rtt)
	}

	// The reader stalls: the sender fills the window and blocks.
	waitFull(t, send, recv)
	unread, capacity := held(recv)
	if got := window(recv); got != limit {
		t.Errorf("window %d after the reader stalled, want %d", got, limit)
	}
	if unread > limit || capacity > limit {
		t.Errorf("a stalled stream of window %d holds %d unread bytes in a buffer of %d", limit, unread, capacity)
	}
	close(stop)
	recv.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(wrote) == 0 {
		if _, err := recv.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// TestAutoTuneStalledReaderKeepsWindow: a reader that never reads leaves
// the window as it was, however long the sender waits, and the stream
// holds at most that window.
func TestAutoTuneStalledReaderKeepsWindow(t *testing.T) {
	send, recv := autoTuneSessions(t, 5*time.Millisecond, 16<<20)
	stop := make(chan struct{})
	wrote := writeUntil(send, stop)
	waitFull(t, send, recv)
	base := recv.session.config.MaxStreamWindowSize
	if got := window(recv); got != base {
		t.Errorf("window of a reader that never read: %d, want %d", got, base)
	}
	if unread, capacity := held(recv); unread != int(base) || capacity > int(base) {
		t.Errorf("a stalled stream of window %d holds %d unread bytes in a buffer of %d, want %d in at most %d", base, unread, capacity, base, base)
	}
	close(stop)
	recv.Close()
	send.Close()
	if err := <-wrote; err != nil && !errors.Is(err, ErrStreamClosed) && !errors.Is(err, ErrConnectionReset) {
		t.Fatal(err)
	}
}

// TestAutoTuneSlowReaderKeepsWindow: a reader slower than the window
// allows (a window's worth in more than two round trips) does not grow
// it: the window is not what holds the stream back.
func TestAutoTuneSlowReaderKeepsWindow(t *testing.T) {
	send, recv := autoTuneSessions(t, 5*time.Millisecond, 16<<20)
	stop := make(chan struct{})
	defer close(stop)
	writeUntil(send, stop)
	base := recv.session.config.MaxStreamWindowSize
	// 16 KiB every 5 ms: 3.2 MB/s, a 256 KiB window's worth in 80 ms,
	// eight round trips of 10 ms. Reading is paced by a ticker, as a slow
	// consumer would be.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 16<<10)
	recv.SetReadDeadline(time.Now().Add(20 * time.Second))
	for read := 0; read < 2*int(base); {
		<-tick.C
		n, err := io.ReadFull(recv, buf)
		if err != nil {
			t.Fatal(err)
		}
		read += n
	}
	if got := window(recv); got != base {
		t.Errorf("window of a slow reader grew to %d, want %d", got, base)
	}
}

// TestAutoTuneDrainingReaderKeepsWindow: a reader that comes back to a
// full window after a pause of several round trips and reads it at once
// does not grow the window: it read fast, but the bytes did not come fast
// (a relay whose far side starts reading again after a pause does this).
// A reader that reads each full window as soon as it is full does grow
// it: the window is what holds it back.
func TestAutoTuneDrainingReaderKeepsWindow(t *testing.T) {
	send, recv := autoTuneSessions(t, 5*time.Millisecond, 16<<20)
	stop := make(chan struct{})
	defer close(stop)
	writeUntil(send, stop)
	base := recv.session.config.MaxStreamWindowSize
	recv.SetReadDeadline(time.Now().Add(20 * time.Second))
	for range 4 {
		waitFull(t, send, recv)
		// The reader's own pace: five round trips of the 10 ms link.
		<-time.After(50 * time.Millisecond)
		readN(t, recv, nil, int(base))
	}
	if got := window(recv); got != base {
		t.Errorf("window of a reader draining full windows after pauses grew to %d, want %d", got, base)
	}
}

// TestAutoTunePaceRoundTrip: the pace test times a window against the
// smoothed round trip, bounded by four times the least. With round trips
// of 10 ms at least and 1 s smoothed, a window read in 50 ms grows (the
// least alone, 4 × 10 ms, would not let it); one read in 300 ms does not
// (the smoothed alone, 4 × 1 s, would let it).
func TestAutoTunePaceRoundTrip(t *testing.T) {
	_, recv := autoTuneSessions(t, 0, 16<<20)
	base := recv.session.config.MaxStreamWindowSize
	for _, tc := range []struct {
		elapsed time.Duration
		grows   bool
	}{{50 * time.Millisecond, true}, {300 * time.Millisecond, false}} {
		recv.recvLock.Lock()
		recv.recvTarget = 0
		recv.rttMin, recv.rttSmooth = 10*time.Millisecond, time.Second
		recv.windowRead = windowGrowthAfter * uint64(base)
		recv.epochStart, recv.epochRecv = time.Now().Add(-tc.elapsed), base
		grew := recv.autoTune(base)
		recv.recvLock.Unlock()
		if (grew > 0) != tc.grows {
			t.Errorf("a window read in %v, round trips 10 ms least and 1 s smoothed: grew by %d, want growth %v", tc.elapsed, grew, tc.grows)
		}
	}
}

// TestAutoTuneSessionBudget: the windows of a session's streams grow past
// the initial window by no more than the session's budget in all; a
// stream gone gives its growth back to the others.
func TestAutoTuneSessionBudget(t *testing.T) {
	c, s := testConnTCP(t)
	conf := testConfNoKeepAlive()
	conf.ConnectionWriteTimeout = 10 * time.Second
	serverConf := conf.Clone()
	serverConf.StreamWindowGrowthLimit = 16 << 20
	serverConf.SessionWindowGrowthLimit = uint64(conf.MaxStreamWindowSize) // one doubling
	client, server := testClientServerConfig(t, c, s, conf, serverConf)
	base := conf.MaxStreamWindowSize
	var sends, recvs []*Stream
	for range 2 {
		send, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := send.Write([]byte{0}); err != nil {
			t.Fatal(err)
		}
		recv, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		sends, recvs = append(sends, send), append(recvs, recv)
		t.Cleanup(func() { send.Close(); recv.Close() })
	}
	// grow asks st's pace rule for a doubling it passes by far.
	grow := func(st *Stream) uint32 {
		st.recvLock.Lock()
		defer st.recvLock.Unlock()
		st.rttMin, st.rttSmooth = 10*time.Millisecond, 10*time.Millisecond
		st.windowRead = windowGrowthAfter * uint64(st.recvWindowSize())
		st.epochStart, st.epochRecv = time.Now().Add(-time.Millisecond), st.recvWindowSize()
		return st.autoTune(st.recvWindowSize())
	}
	if got := grow(recvs[0]); got != base {
		t.Fatalf("the first stream grew by %d, want %d", got, base)
	}
	if got := grow(recvs[1]); got != 0 {
		t.Fatalf("the second stream grew by %d past the session's budget, want 0", got)
	}
	if got := server.windowGrown.Load(); got != uint64(base) {
		t.Fatalf("the session counts %d of growth, want %d", got, base)
	}
	// The first stream ends both ways: its growth goes back.
	sends[0].Close()
	recvs[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for server.windowGrown.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the first stream closed, the session still counts %d of growth", server.windowGrown.Load())
		}
		// The peer's FIN arrives on the session's reader: no event here.
		time.Sleep(time.Millisecond)
	}
	if got := grow(recvs[1]); got != base {
		t.Fatalf("with the first stream gone, the second grew by %d, want %d", got, base)
	}
}
