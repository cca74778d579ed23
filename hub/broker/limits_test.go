package broker

import (
	"bytes"
	"crypto/x509"
	"errors"
	"github.com/tether-io/tether/internal/limit"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rawConnect serves one connection over a pipe, sends a CONNECT for
// clientID and returns the CONNACK's return code; the connection stays
// open until the test ends.
func rawConnect(t *testing.T, b *Broker, clientID string) byte {
	t.Helper()
	_, code := rawConnectConn(t, b, clientID)
	return code
}

// rawConnectConn is rawConnect that also returns the client's end.
func rawConnectConn(t *testing.T, b *Broker, clientID string) (net.Conn, byte) {
	t.Helper()
	c := pipeConn(t, b)
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        30,
			ClientIdentifier: clientID,
			UsernameFlag:     true,
			Username:         []byte("hub/" + clientID + "/?api-version=2020-09-30"),
			PasswordFlag:     true,
			Password:         []byte(password(clientID)),
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	if ack[0] != 0x20 {
		t.Fatalf("got packet %#x, want CONNACK", ack[0])
	}
	return c, ack[3]
}

// pipeConn serves one connection from the source "pipe" and returns the
// client's end. The broker's end ends with the test.
func pipeConn(t *testing.T, b *Broker) net.Conn {
	t.Helper()
	c1, c2 := net.Pipe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b.ServeConn(c1) }()
	t.Cleanup(func() { c2.Close(); wg.Wait() })
	return c2
}

func limitBroker(t *testing.T, opts Options) (*Broker, *atomic.Int32, *sync.Map) {
	t.Helper()
	var auths atomic.Int32
	var limits sync.Map
	opts.Authenticate = func(string, string, []byte, string, []*x509.Certificate) (string, error) {
		auths.Add(1)
		return "", nil
	}
	opts.OnLimit = func(limit, remote string) {
		n, _ := limits.LoadOrStore(limit, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
	}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, &auths, &limits
}

func limitCount(m *sync.Map, limit string) int32 {
	n, ok := m.Load(limit)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

const (
	connackAccepted    = 0
	connackUnavailable = 3
)

// TestConnsPerSource: connections that never send CONNECT count against
// their source, and one past the cap is refused with CONNACK 3 without
// its credentials being looked at.
func TestConnsPerSource(t *testing.T) {
	b, auths, limits := limitBroker(t, Options{MaxConnsPerSource: 2})
	pipeConn(t, b) // idle, as a slowloris would hold it
	// ServeConn counts it on its own goroutine, and an idle conn answers
	// nothing to wait on: watch the count.
	src := limit.Source("pipe")
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for b.sources.Conns(src) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection was never counted")
		}
		<-tick.C
	}
	if code := rawConnect(t, b, "dev1"); code != connackAccepted {
		t.Fatalf("second connection: CONNACK %d", code)
	}
	if code := rawConnect(t, b, "dev2"); code != connackUnavailable {
		t.Fatalf("third connection: CONNACK %d, want 3", code)
	}
	if n := auths.Load(); n != 1 {
		t.Fatalf("Authenticate called %d times, want 1", n)
	}
	if limitCount(limits, LimitConnsPerSource) != 1 {
		t.Fatal("OnLimit not called")
	}
}

// TestConnRatePerSource: CONNECTs past the source's rate are refused
// with CONNACK 3.
func TestConnRatePerSource(t *testing.T) {
	b, auths, limits := limitBroker(t, Options{ConnRatePerSource: 0.001}) // a burst of 1
	if code := rawConnect(t, b, "dev1"); code != connackAccepted {
		t.Fatalf("first CONNECT: CONNACK %d", code)
	}
	for i := range 3 {
		if code := rawConnect(t, b, "dev2"); code != connackUnavailable {
			t.Fatalf("CONNECT %d past the rate: CONNACK %d, want 3", i, code)
		}
	}
	if n := auths.Load(); n != 1 {
		t.Fatalf("Authenticate called %d times, want 1", n)
	}
	if n := limitCount(limits, LimitConnRate); n != 3 {
		t.Fatalf("OnLimit called %d times, want 3", n)
	}
}

// TestAdmitRefuses: a source Admit refuses (in back-off) gets CONNACK 3,
// and Authenticate is not asked.
func TestAdmitRefuses(t *testing.T) {
	var asked atomic.Int32
	b, auths, _ := limitBroker(t, Options{Admit: func(remote string) error {
		if remote != "pipe" {
			t.Errorf("Admit(%q)", remote)
		}
		if asked.Add(1) > 1 {
			return errors.New("too many failed logins")
		}
		return nil
	}})
	if code := rawConnect(t, b, "dev1"); code != connackAccepted {
		t.Fatalf("admitted CONNECT: CONNACK %d", code)
	}
	if code := rawConnect(t, b, "dev2"); code != connackUnavailable {
		t.Fatalf("refused CONNECT: CONNACK %d, want 3", code)
	}
	if n := auths.Load(); n != 1 {
		t.Fatalf("Authenticate called %d times, want 1", n)
	}
}
