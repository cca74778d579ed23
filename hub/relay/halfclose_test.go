package relay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wsconn"
)

// halfCloser is the part of wsconn.Conn beyond net.Conn that half-close
// needs.
type halfCloser interface {
	net.Conn
	CloseWrite() error
	Done() <-chan struct{}
}

func mustHalf(t *testing.T, c net.Conn) halfCloser {
	t.Helper()
	hc, ok := c.(halfCloser)
	if !ok {
		t.Fatalf("%T has no CloseWrite and Done", c)
	}
	return hc
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Done not closed within 5s", what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestSubprotocolName(t *testing.T) {
	if Subprotocol != wsconn.Subprotocol {
		t.Fatalf("relay speaks %q, wsconn offers %q", Subprotocol, wsconn.Subprotocol)
	}
}

// TestSubprotocolSelection: the hub selects tether-stream.v1 when offered,
// among others or alone, and nothing otherwise (the C SDK offers MQTT and
// only checks for 101; C# offers none).
func TestSubprotocolSelection(t *testing.T) {
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{nil, ""},
		{[]string{"MQTT"}, ""},
		{[]string{"MQTT", Subprotocol}, Subprotocol},
		{[]string{Subprotocol}, Subprotocol},
		{[]string{"Tether-Stream.v1"}, ""},
	} {
		h := newHub(t, Options{})
		st := h.open(t, "dev1", 0)
		_, _, got := rawDialProto(t, h, st, st.ServiceToken, tc.offer...)
		if got != tc.want {
			t.Errorf("offered %q: hub selected %q, want %q", tc.offer, got, tc.want)
		}
	}
}

// TestHalfCloseBothTether: A half-closes after its request; B reads it to
// EOF and still sends A 1 MiB, which A receives whole; B's own EOF then
// ends the stream cleanly on both sides.
func TestHalfCloseBothTether(t *testing.T) {
	for _, first := range []side{service, device} {
		t.Run(first.String()+" first", func(t *testing.T) {
			h := newHub(t, Options{})
			st := h.open(t, "dev1", 0)
			conns := [2]halfCloser{
				mustHalf(t, h.mustDial(t, st, st.ServiceToken)),
				mustHalf(t, h.mustDial(t, st, st.DeviceToken)),
			}
			a, b := conns[first], conns[1-first]
			if _, err := a.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			if err := a.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(b)
			if err != nil || string(got) != "request" {
				t.Fatalf("B read %q, %v; want request then EOF", got, err)
			}
			if isClosed(b.Done()) || isClosed(a.Done()) {
				t.Fatal("a half-close ended the stream")
			}
			const n = 1 << 20
			sent := make(chan [32]byte, 1)
			go func() {
				sum, err := sendRandom(b, n, 7)
				if err != nil {
					t.Errorf("B write after A's EOF: %v", err)
				}
				sent <- sum
				b.CloseWrite()
			}()
			hash, err := recvHash(a, n)
			if err != nil {
				t.Fatalf("A read: %v", err)
			}
			if hash != <-sent {
				t.Fatal("B → A bytes differ")
			}
			if n, err := a.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("A read after the data = %d, %v; want B's EOF", n, err)
			}
			waitClosed(t, a.Done(), "A, both sides half-closed")
			waitClosed(t, b.Done(), "B, both sides half-closed")
			i := h.info(t)
			if i.HalfClosedBy != first.String() || i.ClosedBy != (1-first).String() ||
				!strings.Contains(i.Reason, "both sides") {
				t.Errorf("Info %+v", i)
			}
			toA, toB := i.BytesToService, i.BytesToDevice
			if first == device {
				toA, toB = toB, toA
			}
			if toA != n || toB != int64(len("request")) {
				t.Errorf("bytes to A %d, to B %d", toA, toB)
			}
		})
	}
}

// TestHalfCloseThenClose: a close after a half-close still ends the whole
// stream at once, and the half-closed peer notices without reading.
func TestHalfCloseThenClose(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	svc := mustHalf(t, h.mustDial(t, st, st.ServiceToken))
	dev := mustHalf(t, h.mustDial(t, st, st.DeviceToken))
	if err := svc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("device read %v, want EOF", err)
	}
	svc.Close()
	waitClosed(t, dev.Done(), "device, after the service closed")
	// The close frame was seen and answered: no data may follow it.
	if _, err := dev.Write([]byte("too late")); err == nil {
		t.Error("device writes after the stream ended")
	}
	if i := h.info(t); i.ClosedBy != ClosedByService || i.HalfClosedBy != ClosedByService {
		t.Errorf("Info %+v", i)
	}
}

// TestHalfCloseTowardAzure: a Tether side half-closing toward a peer
// without the subprotocol (the C SDK offering MQTT, C# offering nothing)
// ends the stream: the peer gets its data, then close 1000, since closing
// is the only EOF it knows.
func TestHalfCloseTowardAzure(t *testing.T) {
	for _, offer := range [][]string{{"MQTT"}, nil} {
		t.Run(strings.Join(append([]string{"offer"}, offer...), " "), func(t *testing.T) {
			h := newHub(t, Options{})
			st := h.open(t, "dev1", 0)
			svc := mustHalf(t, h.mustDial(t, st, st.ServiceToken))
			_, devR, proto := rawDialProto(t, h, st, st.DeviceToken, offer...)
			if proto != "" {
				t.Fatalf("selected %q", proto)
			}
			if _, err := svc.Write([]byte("last words")); err != nil {
				t.Fatal(err)
			}
			if err := svc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if f := rawRead(t, devR); f != (frame{ws.OpBinary, true, "last words"}) {
				t.Errorf("device got %+v", f)
			}
			f := rawRead(t, devR)
			if code, _ := ws.ParseCloseFrameData([]byte(f.payload)); f.op != ws.OpClose || code != ws.StatusNormalClosure {
				t.Errorf("device got %+v, want close 1000", f)
			}
			if _, err := svc.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("service read %v, want EOF", err)
			}
			if !isClosed(svc.Done()) {
				t.Error("service: stream ended, Done open")
			}
			if i := h.info(t); i.ClosedBy != ClosedByService || i.HalfClosedBy != ClosedByService {
				t.Errorf("Info %+v", i)
			}
		})
	}
}

// TestDataAfterMarker: a data frame after a side's marker breaks the
// protocol: 1002 to it, the stream ends.
func TestDataAfterMarker(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	svc := mustHalf(t, h.mustDial(t, st, st.ServiceToken))
	dev, devR, proto := rawDialProto(t, h, st, st.DeviceToken, Subprotocol)
	if proto != Subprotocol {
		t.Fatalf("selected %q", proto)
	}
	rawWrite(t, dev, ws.OpBinary, true, nil)
	if _, err := svc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("service read %v, want the device's EOF", err)
	}
	rawWrite(t, dev, ws.OpBinary, true, []byte("more"))
	f := rawRead(t, devR)
	if code, _ := ws.ParseCloseFrameData([]byte(f.payload)); f.op != ws.OpClose || code != ws.StatusProtocolError {
		t.Errorf("device got %+v, want close 1002", f)
	}
	waitClosed(t, svc.Done(), "service")
	if i := h.info(t); i.ClosedBy != ClosedByDevice || !strings.Contains(i.Reason, "after the end-of-stream marker") ||
		i.BytesToService != 0 {
		t.Errorf("Info %+v", i)
	}
}

// TestEmptyFrameWithoutSubprotocol: from a side without the subprotocol an
// empty binary frame is no EOF. It goes on as it came to a peer without the
// subprotocol either, and is dropped toward a Tether side, which would
// read it as the end of the stream.
func TestEmptyFrameWithoutSubprotocol(t *testing.T) {
	t.Run("to a raw peer", func(t *testing.T) {
		h := newHub(t, Options{})
		st := h.open(t, "dev1", 0)
		svc, _ := rawDial(t, h, st, st.ServiceToken)
		_, devR, _ := rawDialProto(t, h, st, st.DeviceToken)
		rawWrite(t, svc, ws.OpBinary, true, nil)
		rawWrite(t, svc, ws.OpBinary, true, []byte("after"))
		for _, want := range []frame{{ws.OpBinary, true, ""}, {ws.OpBinary, true, "after"}} {
			if got := rawRead(t, devR); got != want {
				t.Errorf("device got %+v, want %+v", got, want)
			}
		}
	})
	t.Run("to a tether peer", func(t *testing.T) {
		h := newHub(t, Options{})
		st := h.open(t, "dev1", 0)
		svc, _ := rawDial(t, h, st, st.ServiceToken)
		dev := mustHalf(t, h.mustDial(t, st, st.DeviceToken))
		rawWrite(t, svc, ws.OpBinary, true, nil)
		rawWrite(t, svc, ws.OpBinary, true, []byte("after"))
		got := make([]byte, 5)
		if _, err := io.ReadFull(dev, got); err != nil || string(got) != "after" {
			t.Fatalf("device read %q, %v; the empty frame must not read as EOF", got, err)
		}
		if isClosed(dev.Done()) {
			t.Error("stream ended")
		}
	})
}

// TestHalfCloseEarly: a side that half-closes before its peer arrives is
// held like any early bytes, and the marker reaches the peer after them.
func TestHalfCloseEarly(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	svc := mustHalf(t, h.mustDial(t, st, st.ServiceToken))
	if _, err := svc.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	if err := svc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	dev := mustHalf(t, h.mustDial(t, st, st.DeviceToken))
	got, err := io.ReadAll(dev)
	if err != nil || !bytes.Equal(got, []byte("early")) {
		t.Fatalf("device read %q, %v", got, err)
	}
	if _, err := dev.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(svc, buf); err != nil || string(buf) != "late" {
		t.Fatalf("service read %q, %v", buf, err)
	}
	dev.Close()
	if _, err := svc.Read(buf); !errors.Is(err, io.EOF) {
		t.Errorf("service read %v after the device closed", err)
	}
	waitClosed(t, svc.Done(), "service")
}
