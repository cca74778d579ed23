package device

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

// fakeBroker is the hub's end of a net.Pipe, driven packet by packet.
type fakeBroker struct {
	t    *testing.T
	conn net.Conn
	m    *mqttConn // only its reader, on the broker's side
}

func newFakeBroker(t *testing.T) (*fakeBroker, net.Conn) {
	dev, hub := net.Pipe()
	t.Cleanup(func() { hub.Close(); dev.Close() })
	return &fakeBroker{t: t, conn: hub, m: &mqttConn{br: bufio.NewReader(hub)}}, dev
}

func (b *fakeBroker) read() (byte, []byte) {
	b.t.Helper()
	b.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, body, err := b.m.readPacket()
	if err != nil {
		b.t.Errorf("broker read: %v", err)
	}
	return typ, body
}

func (b *fakeBroker) write(typ byte, body []byte) {
	b.t.Helper()
	b.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := b.conn.Write(appendPacket(nil, typ, body)); err != nil {
		b.t.Errorf("broker write: %v", err)
	}
}

// connectResult is what mqttConnect returned.
type connectResult struct {
	m   *mqttConn
	err error
}

// connectAsync runs mqttConnect on dev in the background, for a test that
// plays the hub on the other end.
func connectAsync(dev net.Conn, o mqttOptions) <-chan connectResult {
	done := make(chan connectResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := mqttConnect(ctx, dev, o)
		done <- connectResult{m, err}
	}()
	return done
}

// connectFake runs mqttConnect against the fake broker, which accepts.
func connectFake(t *testing.T, keepAlive, pingTimeout time.Duration) (*fakeBroker, *mqttConn, chan string, chan error) {
	t.Helper()
	b, dev := newFakeBroker(t)
	topics, lost := make(chan string, 10), make(chan error, 1)
	done := connectAsync(dev, mqttOptions{
		clientID: "dev1", username: "hub/dev1/?api-version=x", password: "tok",
		keepAlive: keepAlive, pingTimeout: pingTimeout,
		onPublish: func(topic string) { topics <- topic },
		onLost:    func(err error) { lost <- err },
	})
	typ, body := b.read()
	if typ != pktConnect {
		t.Fatalf("first packet type %#x, want CONNECT", typ)
	}
	want := appendString(nil, "MQTT")
	want = append(want, 4, 0xc2)
	want = binary.BigEndian.AppendUint16(want, uint16(keepAlive/time.Second))
	want = appendString(want, "dev1")
	want = appendString(want, "hub/dev1/?api-version=x")
	want = appendString(want, "tok")
	if !bytes.Equal(body, want) {
		t.Fatalf("CONNECT body\n%q, want\n%q", body, want)
	}
	b.write(pktConnack, []byte{0, 0})
	r := <-done
	if r.err != nil {
		t.Fatalf("mqttConnect: %v", r.err)
	}
	t.Cleanup(func() { r.m.disconnect(0) })
	return b, r.m, topics, lost
}

func TestMQTTConnackRefused(t *testing.T) {
	b, dev := newFakeBroker(t)
	go func() {
		b.read()
		b.write(pktConnack, []byte{0, connackNotAuthorized})
	}()
	_, err := mqttConnect(context.Background(), dev, mqttOptions{clientID: "d", username: "u", keepAlive: time.Second})
	var refused connackError
	if !errors.As(err, &refused) || refused != connackNotAuthorized {
		t.Fatalf("err = %v, want CONNACK 5", err)
	}
}

func TestMQTTSubscribePublish(t *testing.T) {
	b, m, topics, _ := connectFake(t, time.Minute, time.Minute)

	codes := make(chan []byte, 1)
	go func() {
		c, err := m.subscribe(context.Background(), "a/#", "b/#")
		if err != nil {
			t.Errorf("subscribe: %v", err)
		}
		codes <- c
	}()
	typ, body := b.read()
	want := binary.BigEndian.AppendUint16(nil, 1)
	want = append(appendString(want, "a/#"), 0)
	want = append(appendString(want, "b/#"), 0)
	if typ != pktSubscribe|subscribeFlags || !bytes.Equal(body, want) {
		t.Fatalf("SUBSCRIBE %#x %q, want %q", typ, body, want)
	}
	b.write(pktSuback, []byte{0, 1, 0, 0x80})
	if c := <-codes; !bytes.Equal(c, []byte{0, 0x80}) {
		t.Fatalf("SUBACK codes %v", c)
	}

	// QoS 0 and QoS 1 in: both delivered, the second acknowledged.
	b.write(pktPublish, appendString(nil, "a/1"))
	b.write(pktPublish|0x02, append(appendString(nil, "a/2"), 0x12, 0x34, 'x'))
	if typ, body := b.read(); typ != pktPuback || !bytes.Equal(body, []byte{0x12, 0x34}) {
		t.Fatalf("got %#x %v, want PUBACK 0x1234", typ, body)
	}
	for _, want := range []string{"a/1", "a/2"} {
		if got := <-topics; got != want {
			t.Fatalf("topic %q, want %q", got, want)
		}
	}

	// QoS 0 out: an empty message.
	go func() {
		if err := m.publish(context.Background(), "c/200", time.Second); err != nil {
			t.Errorf("publish: %v", err)
		}
	}()
	if typ, body := b.read(); typ != pktPublish || !bytes.Equal(body, appendString(nil, "c/200")) {
		t.Fatalf("got %#x %q, want PUBLISH c/200", typ, body)
	}
}

// A link that swallows everything is noticed by the unanswered ping, and
// a ping that is answered keeps the link.
func TestMQTTKeepAlive(t *testing.T) {
	const keepAlive, pingTimeout = time.Second, 300 * time.Millisecond
	b, m, _, lost := connectFake(t, keepAlive, pingTimeout)

	start := time.Now()
	if typ, _ := b.read(); typ != pktPingreq {
		t.Fatalf("got %#x, want PINGREQ", typ)
	}
	if d := time.Since(start); d < keepAlive/2 {
		t.Fatalf("pinged after %v on a link quiet for less than the keep-alive %v", d, keepAlive)
	}
	b.write(pktPingresp, nil)

	// The next ping goes unanswered.
	if typ, _ := b.read(); typ != pktPingreq {
		t.Fatalf("got %#x, want the second PINGREQ", typ)
	}
	pinged := time.Now()
	select {
	case err := <-lost:
		if !errors.Is(err, errPingTimeout) {
			t.Fatalf("lost with %v, want %v", err, errPingTimeout)
		}
		if d := time.Since(pinged); d < pingTimeout/2 {
			t.Fatalf("gave up %v after the ping, before the ping timeout %v", d, pingTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dead link went unnoticed")
	}
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed")
	}
}

func TestMQTTOversizedPacket(t *testing.T) {
	b, _, _, lost := connectFake(t, time.Minute, time.Minute)
	// Only the header: the client must refuse before reading the body.
	b.conn.Write([]byte{pktPublish, 0xff, 0xff, 0xff, 0x7f})
	select {
	case err := <-lost:
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("more than")) {
			t.Fatalf("lost with %v, want the size refused", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an oversized packet was not refused")
	}
}

func TestRemainingLength(t *testing.T) {
	// One length per width of the encoding, at both ends.
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, maxPacket} {
		p := appendPacket(nil, pktPublish, make([]byte, n))
		m := &mqttConn{br: bufio.NewReader(bytes.NewReader(p))}
		typ, body, err := m.readPacket()
		if err != nil || typ != pktPublish || len(body) != n {
			t.Fatalf("n=%d: %#x %d %v", n, typ, len(body), err)
		}
	}
}
