package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/service"
)

// These tests run the service SDK's streams against a real hub node, as
// tetherd runs it, and a device of the device SDK: on the session, and,
// for comparison, on streams of their own.

type realHub struct {
	t    *testing.T
	log  *slog.Logger // the hub's and the device's, shown when the test fails
	dir  string
	addr string // HTTPS, 127.0.0.1:port
	n    *node.Node
	// mqtt is the device's MQTT address, the same across a restart.
	mqtt string
}

func startRealHub(t *testing.T, noSessions bool) *realHub {
	t.Helper()
	h := &realHub{t: t, dir: t.TempDir()}
	if err := os.Chmod(h.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	h.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub and device log:\n%s", logs.String())
		}
	})
	h.start(noSessions, "127.0.0.1:0", "127.0.0.1:0")
	t.Cleanup(h.stop)
	return h
}

// start runs the node on httpAddr and mqttAddr.
func (h *realHub) start(noSessions bool, httpAddr, mqttAddr string) {
	h.t.Helper()
	httpLn, err := net.Listen("tcp", httpAddr)
	if err != nil {
		h.t.Fatal(err)
	}
	mqttLn, err := net.Listen("tcp", mqttAddr)
	if err != nil {
		httpLn.Close()
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir:      h.dir,
		HTTP:         httpLn,
		MQTT:         mqttLn,
		HostNames:    []string{"127.0.0.1"},
		DrainTimeout: 200 * time.Millisecond,
		NoSessions:   noSessions,
		Logger:       h.log,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.n, h.addr, h.mqtt = n, n.HTTPAddr().String(), n.MQTTAddr().String()
}

func (h *realHub) stop() {
	if err := h.n.Shutdown(context.Background()); err != nil {
		h.t.Errorf("hub shutdown: %v", err)
	}
}

// restart stops the node and starts it again on the same addresses and
// data, as a restarted tetherd.
func (h *realHub) restart(noSessions bool) {
	h.stop()
	h.start(noSessions, h.addr, h.mqtt)
}

func (h *realHub) client(t *testing.T, opts service.Options) *service.Client {
	t.Helper()
	opts.TLSConfig = h.n.ClientTLS()
	c, err := service.New(h.n.OwnerConnectionString(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// device registers dev1 and connects it: it echoes streams named echo,
// rejects those named nope, and holds those named hold unanswered until
// the test ends.
func (h *realHub) device(t *testing.T) {
	t.Helper()
	svc := h.client(t, service.Options{NoSessions: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := svc.CreateDevice(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	dc, err := device.Dial(ctx, svc.DeviceConnectionString(d), device.Options{TLSConfig: h.n.ClientTLS(), MQTTAddress: h.mqtt, Logger: h.log.With("part", "device")})
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(held)
		dc.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch req.Name {
				case "nope":
					req.Reject()
				case "hold":
					<-held
					req.Reject()
				default:
					conn, err := req.Accept(context.Background())
					if err != nil {
						return
					}
					defer conn.Close()
					io.Copy(conn, conn)
				}
			}()
		}
	}()
}

// lockedBuffer is a log's buffer that goroutines write at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// echo writes msg on conn, half-closes it, and checks that msg and then
// EOF come back.
func echo(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Errorf("write: %v", err)
		return
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
		return
	}
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != msg {
		t.Errorf("read %q, %v; want %q then EOF", got, err, msg)
	}
}

// needSessions skips a test of sessions against a hub that has none.
func needSessions(t *testing.T, c *service.Client) {
	t.Helper()
	if !service.SessionOpen(c) {
		t.Fatal("the stream did not go on a session")
	}
}

// A hundred streams at once share one session and each echoes; so they do
// on streams of their own.
func TestHubStreams(t *testing.T) {
	h := startRealHub(t, false)
	h.device(t)
	for _, noSessions := range []bool{false, true} {
		c := h.client(t, service.Options{NoSessions: noSessions})
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := c.OpenStream(context.Background(), "dev1", "echo")
				if err != nil {
					t.Errorf("stream %d: %v", i, err)
					return
				}
				defer conn.Close()
				echo(t, conn, strings.Repeat(fmt.Sprint(i), 1000))
			}()
		}
		wg.Wait()
		if service.SessionOpen(c) == noSessions {
			t.Errorf("NoSessions %v: a session open: %v", noSessions, !noSessions)
		}
	}
}

// A rejection, an offline device: the same errors on both paths; early
// data of a rejected stream comes back from Unsent.
func TestHubRefusals(t *testing.T) {
	h := startRealHub(t, false)
	h.device(t)
	for _, noSessions := range []bool{false, true} {
		c := h.client(t, service.Options{NoSessions: noSessions})
		_, err := c.OpenStream(context.Background(), "dev1", "nope")
		var re *service.RejectError
		if !errors.As(err, &re) || !errors.Is(err, service.ErrNotAllowed) || re.Status != 400 {
			t.Errorf("NoSessions %v: rejection: %v", noSessions, err)
		}
		_, err = c.OpenStream(context.Background(), "nodev", "echo")
		if !errors.Is(err, service.ErrDeviceNotFound) {
			t.Errorf("NoSessions %v: no such device: %v", noSessions, err)
		}
		st, err := c.StartStream(context.Background(), "dev1", "nope")
		if noSessions {
			if !errors.Is(err, service.ErrNotAllowed) {
				t.Errorf("StartStream without a session: %v, want the rejection", err)
			}
			continue
		}
		needSessions(t, c)
		if err != nil {
			t.Fatal(err)
		}
		early := bytes.Repeat([]byte("early "), 1000)
		if _, err := st.Write(early); err != nil && !errors.Is(err, service.ErrNotAllowed) {
			t.Fatalf("write before the answer: %v", err)
		}
		if err := st.Accepted(context.Background()); !errors.Is(err, service.ErrNotAllowed) {
			t.Errorf("Accepted = %v, want the rejection", err)
		}
		if _, err := st.Read(make([]byte, 1)); !errors.Is(err, service.ErrNotAllowed) {
			t.Errorf("Read = %v, want the rejection", err)
		}
		if u := st.Unsent(); !bytes.Equal(u, early) {
			t.Errorf("Unsent holds %d bytes, want the %d written", len(u), len(early))
		}
		st.Close()
	}
}

// Early data reaches an accepting device, ahead of what follows.
func TestHubEarlyData(t *testing.T) {
	h := startRealHub(t, false)
	h.device(t)
	c := h.client(t, service.Options{})
	for i := range 3 {
		st, err := c.StartStream(context.Background(), "dev1", "echo")
		if err != nil {
			t.Fatal(err)
		}
		needSessions(t, c)
		msg := strings.Repeat(fmt.Sprint(i), 100<<10)
		echo(t, st, msg)
		if err := st.Accepted(context.Background()); err != nil || st.Unsent() != nil {
			t.Errorf("Accepted %v, Unsent %d bytes", err, len(st.Unsent()))
		}
		st.Close()
	}
}

// A hub restart cuts the streams on the session; the next stream dials a
// new session and works.
func TestHubRestart(t *testing.T) {
	h := startRealHub(t, false)
	h.device(t)
	c := h.client(t, service.Options{})
	conn, err := c.OpenStream(context.Background(), "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	needSessions(t, c)
	h.restart(false)
	if _, err := io.ReadAll(conn); !errors.Is(err, service.ErrStreamCut) {
		t.Errorf("a stream across a restart read %v, want a cut", err)
	}
	conn.Close()
	// The device comes back on its own; until then the hub says offline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err = c.OpenStream(context.Background(), "dev1", "echo")
		if err == nil || !errors.Is(err, service.ErrDeviceOffline) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("a stream after the restart: %v", err)
	}
	needSessions(t, c)
	echo(t, conn, "after the restart")
	conn.Close()
}

// Giving up on an opening ends it at once, on the session as on a stream
// of its own.
func TestHubOpenCanceled(t *testing.T) {
	h := startRealHub(t, false)
	h.device(t)
	for _, noSessions := range []bool{false, true} {
		c := h.client(t, service.Options{NoSessions: noSessions})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		_, err := c.OpenStream(ctx, "dev1", "hold")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Errorf("NoSessions %v: %v after %v, want the context's deadline", noSessions, err, time.Since(start))
		}
		if !noSessions {
			needSessions(t, c)
		}
	}
}

// A hub without sessions (tetherd --sessions=false) answers 404 on their
// path: streams go their own way for the client's life.
func TestHubWithoutSessions(t *testing.T) {
	h := startRealHub(t, true)
	h.device(t)
	c := h.client(t, service.Options{})
	for range 3 {
		conn, err := c.OpenStream(context.Background(), "dev1", "echo")
		if err != nil {
			t.Fatal(err)
		}
		echo(t, conn, "no session")
		conn.Close()
		if service.SessionOpen(c) {
			t.Fatal("a session with a hub without sessions")
		}
	}
}
