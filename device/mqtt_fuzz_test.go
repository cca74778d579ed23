package device

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// FuzzMQTTReader feeds bytes, as from the hub, to the device's MQTT
// reader. Framing: each packet read is exactly the bytes it came from,
// with the length mochi reads from the same header, no larger than
// maxPacket, and a plain io.EOF only between packets; a PUBLISH that mochi
// decodes, the device decodes to the same topic and packet id. Dispatch:
// the reader loop over the same bytes ends with a loss (a hub DISCONNECT
// when that is what stopped it), delivers the PUBLISH topics in order up
// to the first packet it refuses, and acknowledges each one at QoS 1.
func FuzzMQTTReader(f *testing.F) {
	pub0 := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "$iothub/streams/POST/ssh/?$rid=1", Payload: []byte("x")}
	pub1 := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7, TopicName: "$iothub/streams/POST/ssh/?$rid=2"}
	seeds := [][]byte{
		mochiEncode(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}}),
		mochiEncode(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: connackNotAuthorized}),
		mochiEncode(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: 1, ReasonCodes: []byte{0, 0x80}}),
		mochiEncode(f, pub0),
		mochiEncode(f, pub1),
		mochiEncode(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1}),
		mochiEncode(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}}),
		mochiEncode(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}),
		{pktPublish, 0x80, 0x80, 0x80, 0x80, 0x00},       // a fifth length byte, of nothing
		{pktPublish, 0x80, 0x80, 0x80, 0x80, 0x01},       // a fifth length byte
		{pktPublish, 0xff, 0xff, 0xff, 0x7f},             // 256 MiB announced
		{pktPublish, 0x05, 0x00, 0x09, 'a'},              // cut short
		{pktPublish, 0x03, 0x00, 0x09, 'a'},              // topic longer than the packet
		{pktPublish, 0x03, 0x00, 0x02, 'a'},              // topic one byte past the packet's end
		{pktPublish | 0x02, 0x03, 0x00, 0x01, 'a'},       // QoS 1 without its packet id
		{pktPublish | 0x06, 0x05, 0x00, 0x01, 'a', 0, 1}, // QoS 3
		{pktSuback, 0x01, 0x00},                          // SUBACK without its packet id
		{},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	// A session's worth: the answers, two requests, a ping, then the end.
	f.Add(slices.Concat(seeds[0], seeds[2], seeds[3], seeds[6], seeds[4], seeds[7], seeds[3]))

	f.Fuzz(func(t *testing.T, data []byte) {
		// Framing, packet by packet.
		src := bytes.NewReader(data)
		m := &mqttConn{br: bufio.NewReader(src)}
		var wantTopics []string
		var wantAcks []byte
		var wantHubEnd bool
		stopped := false // where the reader loop stops: a bad PUBLISH or a DISCONNECT
		for off := 0; ; {
			typ, body, err := m.readPacket()
			end := len(data) - src.Len() - m.br.Buffered()
			if err != nil {
				if (err == io.EOF) != (off == len(data)) {
					t.Fatalf("%v at byte %d of %d", err, off, len(data))
				}
				break
			}
			raw := data[off:end]
			head := len(raw) - len(body)
			if raw[0] != typ || head < 2 || head > 5 || !bytes.Equal(raw[head:], body) || len(body) > maxPacket {
				t.Fatalf("packet %#x with a body of %d bytes read from %d bytes %x", typ, len(body), len(raw), raw[:min(len(raw), 8)])
			}
			n, width, err := packets.DecodeLength(bytes.NewReader(raw[1:head]))
			if err != nil || n != len(body) || width != head-1 {
				t.Fatalf("header %x: the device read a body of %d bytes, mochi %d in %d bytes (%v)", raw[:head], len(body), n, width, err)
			}
			off = end

			if stopped {
				continue
			}
			switch typ & 0xf0 {
			case pktPublish:
				topic, id, err := parsePublish(typ, body)
				pk := packets.Packet{ProtocolVersion: 4}
				if pk.FixedHeader.Decode(typ) == nil && pk.PublishDecode(body) == nil {
					if err != nil || topic != pk.TopicName || pk.FixedHeader.Qos > 0 && id != pk.PacketID {
						t.Fatalf("PUBLISH %x: the device read topic %q id %d (%v), mochi %q id %d", raw, topic, id, err, pk.TopicName, pk.PacketID)
					}
				}
				if err != nil {
					stopped = true
					continue
				}
				if typ&0x06 == 0x02 {
					wantAcks = binary.BigEndian.AppendUint16(append(wantAcks, pktPuback, 2), id)
				}
				wantTopics = append(wantTopics, topic)
			case pktDisconnect:
				stopped, wantHubEnd = true, true
			}
		}

		// Dispatch: the reader loop over the same bytes, its acknowledgements
		// written to a pipe.
		dev, hub := net.Pipe()
		acks := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(hub)
			acks <- b
		}()
		var topics []string
		var lost []error
		m = &mqttConn{
			conn: dev, br: bufio.NewReader(bytes.NewReader(data)),
			onPublish: func(topic string) { topics = append(topics, topic) },
			onLost:    func(err error) { lost = append(lost, err) },
			suback:    make(chan []byte, 1),
			done:      make(chan struct{}),
		}
		m.wg.Add(1)
		m.readLoop()
		hub.Close()
		gotAcks := <-acks
		if len(lost) != 1 || lost[0] == nil || errors.Is(lost[0], errHubDisconnect) != wantHubEnd {
			t.Fatalf("the reader ended with losses %v; a hub DISCONNECT: %v", lost, wantHubEnd)
		}
		if !slices.Equal(topics, wantTopics) {
			t.Fatalf("the reader delivered %q, want %q", topics, wantTopics)
		}
		if !bytes.Equal(gotAcks, wantAcks) {
			t.Fatalf("the reader acknowledged %x, want %x", gotAcks, wantAcks)
		}
	})
}
