package relay

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// limitLog records the relay's OnLimit calls.
type limitLog struct {
	mu  sync.Mutex
	got []string
}

func (l *limitLog) on(limit, _ string) {
	l.mu.Lock()
	l.got = append(l.got, limit)
	l.mu.Unlock()
}

func (l *limitLog) count(limit string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, g := range l.got {
		if g == limit {
			n++
		}
	}
	return n
}

func wantLimit(t *testing.T, err error, limit string) {
	t.Helper()
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != limit {
		t.Fatalf("Open = %v, want a %s LimitError", err, limit)
	}
}

// TestStreamCaps: the caps on open streams per device, per hub and
// waiting for a side each refuse one stream too many, and free a place
// when a stream ends, whether it ended paired or not.
func TestStreamCaps(t *testing.T) {
	var lim limitLog
	h := newHub(t, Options{MaxStreams: 4, MaxStreamsPerDevice: 2, MaxPending: 3, OnLimit: lim.on})
	a1 := h.open(t, "a", 0)
	a2 := h.open(t, "a", 0)
	_, err := h.r.Open("a", "ssh", 0)
	wantLimit(t, err, LimitStreamsPerDevice)
	h.open(t, "b", 0)
	// Three waiting: the pending cap refuses a fourth, for any device.
	_, err = h.r.Open("c", "ssh", 0)
	wantLimit(t, err, LimitPendingHandshakes)

	// Pairing a1 makes room among the pending, not among the open.
	svc := h.mustDial(t, a1, a1.ServiceToken)
	dev := h.mustDial(t, a1, a1.DeviceToken)
	echo(t, svc, dev, "paired")
	c1 := h.open(t, "c", 0)
	_, err = h.r.Open("d", "ssh", 0)
	wantLimit(t, err, LimitStreamsPerHub)
	if e := err.Error(); e != "Too many concurrent streams on this hub (at most 4)" {
		t.Fatalf("message %q", e)
	}

	// Ending streams frees their places: a canceled (unpaired) one and a
	// closed (paired) one.
	h.r.Cancel(c1.ID)
	h.info(t)
	h.open(t, "d", 0)
	svc.Close()
	h.info(t)
	// a2 pairs, leaving room among the pending for a's second stream.
	echo(t, h.mustDial(t, a2, a2.ServiceToken), h.mustDial(t, a2, a2.DeviceToken), "paired")
	h.open(t, "a", 0)
	if n := h.r.Active(); n != 4 {
		t.Fatalf("%d streams active, want 4", n)
	}
	for l, n := range map[string]int{LimitStreamsPerDevice: 1, LimitPendingHandshakes: 1, LimitStreamsPerHub: 1} {
		if got := lim.count(l); got != n {
			t.Errorf("OnLimit(%s) called %d times, want %d", l, got, n)
		}
	}
}

// echo writes msg from a and reads it at b.
func echo(t *testing.T, a, b interface {
	Write([]byte) (int, error)
	Read([]byte) (int, error)
}, msg string) {
	t.Helper()
	if _, err := a.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	n := 0
	for n < len(buf) {
		m, err := b.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	if string(buf) != msg {
		t.Fatalf("got %q, want %q", buf, msg)
	}
}

// TestMessageTooBig: a frame header announcing more than the maximum, or
// a fragment taking its message past it, ends the stream: 1009 to the
// sender, 1001 to the other side. Frames up to the maximum pass.
func TestMessageTooBig(t *testing.T) {
	const max = 1000
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, c interface{ Write([]byte) (int, error) })
	}{
		{"one frame", func(t *testing.T, c interface{ Write([]byte) (int, error) }) {
			// Only the header: the hub must not wait for the payload.
			h := ws.Header{OpCode: ws.OpBinary, Fin: true, Masked: true, Length: 1 << 40}
			if err := ws.WriteHeader(c, h); err != nil {
				t.Fatal(err)
			}
		}},
		{"fragments", func(t *testing.T, c interface{ Write([]byte) (int, error) }) {
			for i, op := range []ws.OpCode{ws.OpBinary, ws.OpContinuation, ws.OpContinuation} {
				f := ws.MaskFrame(ws.NewFrame(op, i == 2, make([]byte, 400)))
				if err := ws.WriteFrame(c, f); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lim limitLog
			h := newHub(t, Options{MaxMessage: max, OnLimit: lim.on})
			st := h.open(t, "dev1", 0)
			svc, svcR := rawDial(t, h, st, st.ServiceToken)
			_, devR := rawDial(t, h, st, st.DeviceToken)
			// A message of exactly the maximum passes, in two fragments.
			rawWrite(t, svc, ws.OpBinary, false, make([]byte, max/2))
			rawWrite(t, svc, ws.OpContinuation, true, make([]byte, max/2))
			for range 2 {
				if f := rawRead(t, devR); len(f.payload) != max/2 {
					t.Fatalf("relayed %d bytes", len(f.payload))
				}
			}
			tc.write(t, svc)
			wantClose(t, svcR, ws.StatusMessageTooBig)
			wantClose(t, devR, ws.StatusGoingAway)
			if info := h.info(t); info.ClosedBy != ClosedByService {
				t.Fatalf("ClosedBy %q", info.ClosedBy)
			}
			if lim.count(LimitMessageSize) != 1 {
				t.Fatal("OnLimit not called")
			}
		})
	}
}

// wantClose reads frames from r, skipping data, until a close frame, and
// checks its code.
func wantClose(t *testing.T, r interface{ Read([]byte) (int, error) }, code ws.StatusCode) {
	t.Helper()
	for range 16 {
		f := rawRead(t, r)
		if f.op != ws.OpClose {
			continue
		}
		got, _ := ws.ParseCloseFrameData([]byte(f.payload))
		if got != code {
			t.Fatalf("close %d %q, want %d", got, f.payload, code)
		}
		return
	}
	t.Fatal("no close frame")
}

// TestIdleTimeout: a stream with no data either way for the idle timeout
// is ended by the hub, 1001 to both; data keeps a stream open past it.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	var lim limitLog
	h := newHub(t, Options{IdleTimeout: idle, OnLimit: lim.on})
	st := h.open(t, "dev1", 0)
	svc, svcR := rawDial(t, h, st, st.ServiceToken)
	_, devR := rawDial(t, h, st, st.DeviceToken)
	start := time.Now()
	var quiet time.Time // when the last data crossed
	// Data every third of the timeout, for twice the timeout: the
	// stream stays up.
	for time.Since(start) < 2*idle {
		rawWrite(t, svc, ws.OpBinary, true, []byte("x"))
		if f := rawRead(t, devR); f.payload != "x" {
			t.Fatalf("got %+v", f)
		}
		quiet = time.Now()
		// A ping is not data: it does not keep the stream open.
		rawWrite(t, svc, ws.OpPing, true, nil)
		if f := rawRead(t, svcR); f.op != ws.OpPong {
			t.Fatalf("got %+v, want a pong", f)
		}
		time.Sleep(idle / 3) // the pace of the data, not a wait for an event
	}
	wantClose(t, devR, ws.StatusGoingAway)
	wantClose(t, svcR, ws.StatusGoingAway)
	if d := time.Since(quiet); d < idle/2 || d > 5*idle {
		t.Fatalf("ended %v after the last data, want about %v", d, idle)
	}
	if info := h.info(t); info.ClosedBy != ClosedByHub {
		t.Fatalf("ClosedBy %q", info.ClosedBy)
	}
	if lim.count(LimitIdleTimeout) != 1 {
		t.Fatal("OnLimit not called")
	}
}
