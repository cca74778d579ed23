package device

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/wire"
)

// The device's MQTT codec is written by hand (mqtt.go). These tests hold
// it against mochi's packets package, the codec of the broker the hub
// runs: what the device encodes, mochi decodes to what the device meant,
// and what mochi encodes, the device reads as mochi meant it.

// mochiEncode encodes pk as an MQTT 3.1.1 broker would send it.
func mochiEncode(t testing.TB, pk packets.Packet) []byte {
	t.Helper()
	pk.ProtocolVersion = 4
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Puback:
		err = pk.PubackEncode(&b)
	case packets.Suback:
		err = pk.SubackEncode(&b)
	case packets.Pingresp:
		err = pk.PingrespEncode(&b)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&b)
	default:
		t.Fatalf("no encoder here for packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatalf("mochi encoding %+v: %v", pk.FixedHeader, err)
	}
	return b.Bytes()
}

// mochiRead reads one packet from the device as mochi's broker reads a
// client's: fixed header, remaining length, then the body by type, each
// checked as the broker checks it.
func mochiRead(r *bufio.Reader) (packets.Packet, error) {
	pk := packets.Packet{ProtocolVersion: 4}
	hb, err := r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, fmt.Errorf("fixed header %#x: %w", hb, err)
	}
	if pk.FixedHeader.Remaining, _, err = packets.DecodeLength(r); err != nil {
		return pk, fmt.Errorf("remaining length: %w", err)
	}
	body := make([]byte, pk.FixedHeader.Remaining)
	if _, err := io.ReadFull(r, body); err != nil {
		return pk, err
	}
	code := packets.CodeSuccess
	switch pk.FixedHeader.Type {
	case packets.Connect:
		if err = pk.ConnectDecode(body); err == nil {
			code = pk.ConnectValidate()
		}
	case packets.Subscribe:
		if err = pk.SubscribeDecode(body); err == nil {
			code = pk.SubscribeValidate()
		}
	case packets.Publish:
		if err = pk.PublishDecode(body); err == nil {
			code = pk.PublishValidate(0)
		}
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pingreq, packets.Disconnect:
		if len(body) != 0 {
			err = fmt.Errorf("%d bytes of body", len(body))
		}
	default:
		err = errors.New("not a packet a device sends")
	}
	if err == nil && code != packets.CodeSuccess {
		err = code
	}
	if err != nil {
		return pk, fmt.Errorf("%s: %w", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	return pk, nil
}

// mochiHub is the hub's end of a pipe to the device, reading and writing
// with mochi's codec.
type mochiHub struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func newMochiHub(t *testing.T) (*mochiHub, net.Conn) {
	dev, hub := net.Pipe()
	t.Cleanup(func() { hub.Close(); dev.Close() })
	return &mochiHub{t: t, conn: hub, br: bufio.NewReader(hub)}, dev
}

// read reads the device's next packet, which must be of type typ.
func (h *mochiHub) read(typ byte) packets.Packet {
	h.t.Helper()
	h.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	pk, err := mochiRead(h.br)
	if err != nil {
		h.t.Fatalf("mochi reading the device's packet: %v", err)
	}
	if pk.FixedHeader.Type != typ {
		h.t.Fatalf("the device sent %s, want %s", packets.PacketNames[pk.FixedHeader.Type], packets.PacketNames[typ])
	}
	return pk
}

// write sends pk as mochi encodes it.
func (h *mochiHub) write(pk packets.Packet) {
	h.t.Helper()
	h.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := h.conn.Write(mochiEncode(h.t, pk)); err != nil {
		h.t.Fatalf("writing %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
}

// connectMochi runs mqttConnect against a mochi-speaking hub and returns
// the CONNECT as mochi read it, the hub, and the connection once the hub
// answered with connack.
func connectMochi(t *testing.T, o mqttOptions, connack packets.Packet) (*mochiHub, packets.Packet, *mqttConn, error) {
	t.Helper()
	h, dev := newMochiHub(t)
	done := connectAsync(dev, o)
	connect := h.read(packets.Connect)
	connack.FixedHeader.Type = packets.Connack
	h.write(connack)
	r := <-done
	if r.m != nil {
		t.Cleanup(func() { r.m.disconnect(0) })
	}
	return h, connect, r.m, r.err
}

// TestMQTTSessionAgainstMochi runs a device's session against a hub
// that speaks mochi's codec: each packet the device sends, mochi decodes
// and finds valid, with the values the device meant; each mochi sends,
// the device reads as mochi meant it.
func TestMQTTSessionAgainstMochi(t *testing.T) {
	topics, lost := make(chan string, 10), make(chan error, 1)
	o := mqttOptions{
		clientID: "dev1", username: "hub.example/dev1/?api-version=2021-04-12",
		password:  "SharedAccessSignature sr=hub.example%2Fdevices%2Fdev1&sig=c2ln&se=1700000000",
		keepAlive: 90 * time.Second, pingTimeout: 10 * time.Second,
		onPublish: func(topic string) { topics <- topic },
		onLost:    func(err error) { lost <- err },
	}
	h, connect, m, err := connectMochi(t, o, packets.Packet{})
	if err != nil {
		t.Fatalf("mqttConnect after mochi's CONNACK: %v", err)
	}
	c := connect.Connect
	if string(c.ProtocolName) != "MQTT" || connect.ProtocolVersion != 4 || !c.Clean || c.WillFlag ||
		c.Keepalive != 90 || c.ClientIdentifier != o.clientID ||
		!c.UsernameFlag || string(c.Username) != o.username || !c.PasswordFlag || string(c.Password) != o.password {
		t.Fatalf("mochi read the CONNECT as protocol %q version %d, clean %v, will %v, keep-alive %d, client %q, user name %v %q, password %v %q",
			c.ProtocolName, connect.ProtocolVersion, c.Clean, c.WillFlag, c.Keepalive, c.ClientIdentifier, c.UsernameFlag, c.Username, c.PasswordFlag, c.Password)
	}

	// SUBSCRIBE, and mochi's SUBACK back: one return code per filter.
	filters := []string{wire.TopicRequestFilter, wire.TopicResponseFilter}
	codes := make(chan []byte, 1)
	go func() {
		got, err := m.subscribe(context.Background(), filters...)
		if err != nil {
			t.Errorf("subscribe: %v", err)
		}
		codes <- got
	}()
	sub := h.read(packets.Subscribe)
	var gotFilters []string
	for _, f := range sub.Filters {
		if f.Qos != 0 {
			t.Errorf("filter %q at QoS %d, want 0", f.Filter, f.Qos)
		}
		gotFilters = append(gotFilters, f.Filter)
	}
	if sub.FixedHeader.Qos != 1 || !slices.Equal(gotFilters, filters) {
		t.Fatalf("mochi read the SUBSCRIBE as QoS %d, filters %q; want %q", sub.FixedHeader.Qos, gotFilters, filters)
	}
	h.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: sub.PacketID, ReasonCodes: []byte{0, 0x80}})
	if got := <-codes; !bytes.Equal(got, []byte{0, 0x80}) {
		t.Fatalf("the device read mochi's SUBACK codes as %v, want [0 128]", got)
	}

	// PUBLISH from the hub at QoS 0, then at QoS 1 with a topic of more
	// than 127 bytes (a remaining length of two bytes), each with a
	// payload the device ignores; the second is acknowledged.
	long := "$iothub/streams/POST/ssh/?$rid=" + strings.Repeat("r", 200)
	h.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "$iothub/streams/POST/ssh/?$rid=1", Payload: []byte("ignored")})
	h.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 0xbeef, TopicName: long, Payload: []byte("{}")})
	if ack := h.read(packets.Puback); ack.PacketID != 0xbeef {
		t.Fatalf("PUBACK for packet %#x, want 0xbeef", ack.PacketID)
	}
	for _, want := range []string{"$iothub/streams/POST/ssh/?$rid=1", long} {
		if got := <-topics; got != want {
			t.Fatalf("the device read mochi's PUBLISH topic as %q, want %q", got, want)
		}
	}

	// PUBLISH from the device.
	go func() {
		if err := m.publish(context.Background(), "$iothub/streams/res/200/?$rid=1", time.Second); err != nil {
			t.Errorf("publish: %v", err)
		}
	}()
	pub := h.read(packets.Publish)
	if pub.FixedHeader.Qos != 0 || pub.FixedHeader.Retain || pub.FixedHeader.Dup || pub.TopicName != "$iothub/streams/res/200/?$rid=1" || len(pub.Payload) != 0 {
		t.Fatalf("mochi read the device's PUBLISH as %+v %q %q", pub.FixedHeader, pub.TopicName, pub.Payload)
	}

	// DISCONNECT from the hub ends the session with that reason.
	h.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	select {
	case err := <-lost:
		if !errors.Is(err, errHubDisconnect) {
			t.Fatalf("lost with %v after mochi's DISCONNECT, want %v", err, errHubDisconnect)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mochi's DISCONNECT went unnoticed")
	}
}

// TestMQTTKeepAliveAgainstMochi: the device's PINGREQ and DISCONNECT are
// what mochi expects, and mochi's PINGRESP answers the ping: a device that
// missed it would give up at the ping timeout and close instead of
// pinging again then.
func TestMQTTKeepAliveAgainstMochi(t *testing.T) {
	o := mqttOptions{clientID: "dev1", username: "u", keepAlive: 20 * time.Millisecond, pingTimeout: time.Second, onLost: func(error) {}}
	h, connect, m, err := connectMochi(t, o, packets.Packet{})
	if err != nil {
		t.Fatalf("mqttConnect: %v", err)
	}
	if connect.Connect.PasswordFlag || connect.Connect.Keepalive != 0 {
		t.Fatalf("mochi read the CONNECT as password %v, keep-alive %d", connect.Connect.PasswordFlag, connect.Connect.Keepalive)
	}
	h.read(packets.Pingreq)
	h.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}})
	h.read(packets.Pingreq)

	done := make(chan struct{})
	go func() {
		defer close(done)
		m.disconnect(10 * time.Second)
	}()
	// Pings may still be on their way before the DISCONNECT.
	for {
		h.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		pk, err := mochiRead(h.br)
		if err != nil {
			t.Fatalf("mochi reading the device's packet: %v", err)
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			break
		}
		if pk.FixedHeader.Type != packets.Pingreq {
			t.Fatalf("the device sent %s, want DISCONNECT", packets.PacketNames[pk.FixedHeader.Type])
		}
	}
	<-done
}

// TestMQTTConnackAgainstMochi: mochi's CONNACK accepts (with or without a
// session present) or refuses with the code the device reports.
func TestMQTTConnackAgainstMochi(t *testing.T) {
	o := mqttOptions{clientID: "dev1", username: "u", keepAlive: time.Minute, pingTimeout: time.Minute, onLost: func(error) {}}
	for _, tc := range []struct {
		connack packets.Packet
		want    error
	}{
		{packets.Packet{}, nil},
		{packets.Packet{SessionPresent: true}, nil},
		{packets.Packet{ReasonCode: connackServerUnavailable}, connackError(connackServerUnavailable)},
		{packets.Packet{ReasonCode: connackBadCredentials}, connackError(connackBadCredentials)},
		{packets.Packet{ReasonCode: connackNotAuthorized}, connackError(connackNotAuthorized)},
	} {
		_, _, _, err := connectMochi(t, o, tc.connack)
		if err != tc.want {
			t.Errorf("CONNACK session present %v, code %d: %v, want %v", tc.connack.SessionPresent, tc.connack.ReasonCode, err, tc.want)
		}
	}
}

// TestMQTTFramingAgainstMochi covers each width of the remaining length
// the device takes (one to three bytes, up to maxPacket) and one beyond:
// PUBLISH packets mochi encodes, the device reads whole with their topic
// and packet id, or refuses past maxPacket before reading the body; and
// those the device encodes, mochi reads with their topic.
func TestMQTTFramingAgainstMochi(t *testing.T) {
	for _, tc := range []struct{ topic, payload int }{
		{1, 0}, {123, 0}, {124, 0}, {125, 0}, {126, 0}, {16379, 0}, {16380, 0}, {16381, 0}, {16382, 0},
		{100, 100_000}, {100, maxPacket - 104}, {100, maxPacket - 103}, {100, 2_100_000},
	} {
		topic := strings.Repeat("t", tc.topic)
		for _, qos := range []byte{0, 1} {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, Payload: make([]byte, tc.payload)}
			if qos > 0 {
				pk.PacketID = 0x0102
			}
			remaining := 2 + tc.topic + 2*int(qos) + tc.payload
			b := mochiEncode(t, pk)
			br := bufio.NewReader(bytes.NewReader(b))
			typ, body, err := (&mqttConn{br: br}).readPacket()
			if remaining > maxPacket {
				if err == nil || !strings.Contains(err.Error(), "more than") {
					t.Errorf("PUBLISH of %d bytes after its header: %v, want it refused", remaining, err)
				}
				continue
			}
			if err != nil || typ != b[0] || len(body) != remaining || br.Buffered() != 0 {
				t.Fatalf("PUBLISH QoS %d of %d bytes after its header: type %#x, body of %d, %d bytes left, %v", qos, remaining, typ, len(body), br.Buffered(), err)
			}
			got, id, err := parsePublish(typ, body)
			if err != nil || got != topic || id != pk.PacketID {
				t.Fatalf("PUBLISH QoS %d of %d bytes after its header: topic of %d bytes, id %#x, %v", qos, remaining, len(got), id, err)
			}
		}
		if tc.payload > 0 {
			continue // the device publishes no payload
		}
		pk, err := mochiRead(bufio.NewReader(bytes.NewReader(publishPacket(nil, topic))))
		if err != nil || pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 0 || pk.TopicName != topic || len(pk.Payload) != 0 {
			t.Fatalf("device PUBLISH of a %d-byte topic: mochi read %+v, topic of %d bytes, %v", tc.topic, pk.FixedHeader, len(pk.TopicName), err)
		}
	}
}
