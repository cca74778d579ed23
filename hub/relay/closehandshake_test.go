package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// tapConn records the raw bytes read from a TCP conn, beneath TLS, so a
// test can see which TLS records the hub sent last.
type tapConn struct {
	net.Conn
	mu sync.Mutex
	in []byte
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in = append(c.in, p[:n]...)
	c.mu.Unlock()
	return n, err
}

// lastRecordType returns the content type of the last whole TLS record
// read (21: alert), 0 if none.
func (c *tapConn) lastRecordType() byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last byte
	for b := c.in; len(b) >= 5; {
		n := 5 + (int(b[3])<<8 | int(b[4]))
		if len(b) < n {
			break
		}
		last, b = b[0], b[n:]
	}
	return last
}

// stopAfterClose is a device conn whose sender goroutine is stopped
// before the test writes on it.
type stopAfterClose struct {
	net.Conn
	once    sync.Once
	stop    chan struct{}
	stopped chan struct{}
}

func (c *stopAfterClose) Write(p []byte) (int, error) {
	c.once.Do(func() {
		close(c.stop)
		<-c.stopped
	})
	return c.Conn.Write(p)
}

// azureDial opens a stream side as the Azure C device SDK does (offering
// subprotocol MQTT, which the hub does not select) over TLS 1.2, whose
// record headers show an alert as one: the test can then tell TLS's
// close_notify from a dropped connection.
func azureDial(t *testing.T, h *testHub, st *Stream, token string) (net.Conn, *bufio.Reader, *tapConn) {
	t.Helper()
	var tap *tapConn
	conf := h.tls.Clone()
	conf.MaxVersion = tls.VersionTLS12
	d := ws.Dialer{
		Header:    ws.HandshakeHeaderString("Authorization: Bearer " + token + "\r\n"),
		TLSConfig: conf,
		Protocols: []string{"MQTT"},
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tap = &tapConn{Conn: c}
			return tap, nil
		},
	}
	conn, r, _ := dialWith(t, h, st, d)
	return conn, r, tap
}

// TestCloseHandshake: when a stream ends, a side the hub sent a close
// frame gets time to answer with its own (RFC 6455 §5.5.1, §7.1.1). A
// polite side that answers sees the hub close the connection at once after
// its answer, with TLS's close_notify; a silent one is cut when the close
// timeout passes, and nothing of its stream outlives that bound (goleak
// checks the goroutines, OnDone comes only once its conn is closed). Both
// for a paired stream whose other side closed and for a side left waiting
// when the handshake window ended.
func TestCloseHandshake(t *testing.T) {
	type ending struct {
		name string
		// start opens a stream whose Azure-style device side is then
		// sent a close frame by the hub, and returns that side.
		start func(t *testing.T, h *testHub) (net.Conn, *bufio.Reader, *tapConn)
		code  ws.StatusCode // of the hub's close frame; 0: any (a race decides it)
	}
	endings := []ending{
		{"paired, service closed", func(t *testing.T, h *testHub) (net.Conn, *bufio.Reader, *tapConn) {
			st := h.open(t, "dev1", 0)
			svc := h.mustDial(t, st, st.ServiceToken)
			dev, devR, tap := azureDial(t, h, st, st.DeviceToken)
			if _, err := svc.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if f := rawRead(t, devR); f.payload != "hello" {
				t.Fatalf("device read %+v", f)
			}
			svc.Close()
			return dev, devR, tap
		}, ws.StatusNormalClosure},
		{"paired, service closed while the device sends", func(t *testing.T, h *testHub) (net.Conn, *bufio.Reader, *tapConn) {
			// The device's copy goroutine is busy relaying when the
			// stream ends: it must still give the device its time to
			// answer (it once saw the end before the close frame went
			// out, and dropped the connection).
			st := h.open(t, "dev1", 0)
			svc := h.mustDial(t, st, st.ServiceToken)
			dev, devR, tap := azureDial(t, h, st, st.DeviceToken)
			stop, stopped := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(stopped)
				f := ws.MaskFrame(ws.NewBinaryFrame([]byte("data")))
				for {
					select {
					case <-stop:
						return
					default:
					}
					if ws.WriteFrame(dev, f) != nil {
						return
					}
				}
			}()
			if _, err := io.ReadFull(svc, make([]byte, 4096)); err != nil {
				t.Fatal(err)
			}
			svc.Close()
			// The device stops sending before it answers the close
			// frame, as RFC 6455 §5.5.1 asks.
			return &stopAfterClose{Conn: dev, stop: stop, stopped: stopped}, devR, tap
		}, 0},
		{"unpaired, window ended", func(t *testing.T, h *testHub) (net.Conn, *bufio.Reader, *tapConn) {
			st := h.open(t, "dev1", 100*time.Millisecond)
			return azureDial(t, h, st, st.DeviceToken)
		}, ws.StatusInternalServerError},
	}
	for _, e := range endings {
		t.Run(e.name+", polite", func(t *testing.T) {
			// A long bound: an end that comes soon after the answer is
			// the hub's answer to it, not the bound.
			h := newHub(t, Options{CloseTimeout: 30 * time.Second})
			dev, devR, tap := e.start(t, h)
			f := rawRead(t, devR)
			code, _ := ws.ParseCloseFrameData([]byte(f.payload))
			for f.op.IsData() && e.code == 0 {
				// Its own data, relayed before the service closed.
				f = rawRead(t, devR)
				code, _ = ws.ParseCloseFrameData([]byte(f.payload))
			}
			if f.op != ws.OpClose || (e.code != 0 && code != e.code) {
				t.Fatalf("device got %+v, want a close frame %d", f, e.code)
			}
			// The hub waits for the answer: the conn is still open.
			dev.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := devR.ReadByte(); !isTimeout(err) {
				t.Fatalf("before the device answered the close frame, read gave %v; want the conn still open", err)
			}
			dev.SetReadDeadline(time.Time{})
			rawWrite(t, dev, ws.OpClose, true, ws.NewCloseFrameBody(code, ""))
			start := time.Now()
			if err := readWithin(t, dev, 5*time.Second); err != io.EOF {
				t.Fatalf("after the close handshake, read gave %v, want io.EOF", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("the hub closed %v after the answer", d)
			}
			if typ := tap.lastRecordType(); typ != 21 {
				t.Errorf("last TLS record of type %d, want 21 (close_notify alert)", typ)
			}
			h.info(t)
		})
		t.Run(e.name+", silent", func(t *testing.T) {
			const bound = 300 * time.Millisecond
			h := newHub(t, Options{CloseTimeout: bound})
			dev, devR, _ := e.start(t, h)
			f := rawRead(t, devR)
			if f.op != ws.OpClose {
				t.Fatalf("device got %+v, want a close frame", f)
			}
			start := time.Now()
			var err error
			for err == nil {
				_, err = devR.ReadByte()
			}
			waited := time.Since(start)
			var ne net.Error
			if err != io.EOF && !(errors.As(err, &ne) && !ne.Timeout()) {
				t.Fatalf("silent side's read ended with %v, want the conn closed", err)
			}
			if waited < bound-50*time.Millisecond {
				t.Errorf("the hub closed %v after its close frame, before the %v bound", waited, bound)
			}
			if waited > bound+3*time.Second {
				t.Errorf("the hub closed %v after its close frame; bound %v", waited, bound)
			}
			h.info(t)
			dev.Close()
		})
	}
}
