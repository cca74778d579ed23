package broker

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/internal/limit"
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
	c := sendConnect(t, b, clientID, 4)
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	if ack[0] != 0x20 {
		t.Fatalf("got packet %#x, want CONNACK", ack[0])
	}
	return c, ack[3]
}

// sendConnect serves one connection over a pipe and sends an MQTT CONNECT
// of version for clientID on it.
func sendConnect(t *testing.T, b *Broker, clientID string, version byte) net.Conn {
	t.Helper()
	c := pipeConn(t, b)
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
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
	return c
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
// its credentials being looked at; a connection that logged in counts no
// more, so any number of devices behind one address connect.
func TestConnsPerSource(t *testing.T) {
	b, auths, limits := limitBroker(t, Options{MaxConnsPerSource: 2})
	src := limit.Source("pipe")
	idle := func(n int) {
		pipeConn(t, b) // idle, as a slowloris would hold it
		// ServeConn counts it on its own goroutine, and an idle conn
		// answers nothing to wait on: watch the count.
		deadline := time.Now().Add(wait)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for b.sources.Conns(src) < n {
			if time.Now().After(deadline) {
				t.Fatalf("idle connection %d was never counted", n)
			}
			<-tick.C
		}
	}
	idle(1)
	for i := range 5 {
		if code := rawConnect(t, b, fmt.Sprintf("dev%d", i)); code != connackAccepted {
			t.Fatalf("device %d beside one idle connection: CONNACK %d", i, code)
		}
	}
	if n := b.sources.Conns(src); n != 1 {
		t.Fatalf("%d connections counted with one idle and 5 logged in, want 1", n)
	}
	idle(2)
	if code := rawConnect(t, b, "late"); code != connackUnavailable {
		t.Fatalf("a CONNECT beside two idle connections: CONNACK %d, want 3", code)
	}
	if n := auths.Load(); n != 5 {
		t.Fatalf("Authenticate called %d times, want 5", n)
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

// TestAdmitRefuses: Admit is asked with the CONNECT's client id and
// remote; one it refuses (in back-off) gets CONNACK 3 in MQTT 3.1.1, and in
// MQTT 5 quota exceeded with Admit's words as the reason string, and
// Authenticate is not asked.
func TestAdmitRefuses(t *testing.T) {
	const why = "throttled: too many failed logins for device dev2; retry in 15s"
	b, auths, _ := limitBroker(t, Options{Admit: func(clientID, remote string) error {
		if remote != "pipe" {
			t.Errorf("Admit(%q, %q)", clientID, remote)
		}
		if clientID == "dev2" {
			return errors.New(why)
		}
		return nil
	}})
	if code := rawConnect(t, b, "dev1"); code != connackAccepted {
		t.Fatalf("admitted CONNECT: CONNACK %d", code)
	}
	if code := rawConnect(t, b, "dev2"); code != connackUnavailable {
		t.Fatalf("refused CONNECT: CONNACK %d, want 3", code)
	}
	ack := connect5(t, b, "dev2")
	if ack.ReasonCode != packets.ErrQuotaExceeded.Code || ack.Properties.ReasonString != why {
		t.Fatalf("refused MQTT 5 CONNECT: CONNACK %#x %q, want %#x %q", ack.ReasonCode, ack.Properties.ReasonString, packets.ErrQuotaExceeded.Code, why)
	}
	if n := auths.Load(); n != 1 {
		t.Fatalf("Authenticate called %d times, want 1", n)
	}
}

// connect5 sends an MQTT 5 CONNECT for clientID over a pipe and returns
// the CONNACK.
func connect5(t *testing.T, b *Broker, clientID string) packets.Packet {
	t.Helper()
	r := bufio.NewReader(sendConnect(t, b, clientID, 5))
	first, err := r.ReadByte()
	if err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	ack := packets.Packet{ProtocolVersion: 5}
	if err := ack.FixedHeader.Decode(first); err != nil || ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("got packet %#x (%v), want CONNACK", first, err)
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		t.Fatalf("read CONNACK length: %v", err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	if err := ack.ConnackDecode(body); err != nil {
		t.Fatalf("decode CONNACK: %v", err)
	}
	return ack
}
