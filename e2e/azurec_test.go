package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/internal/wstest"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// azureCDevice is a device that speaks, byte for byte where it matters,
// as the Azure IoT C device SDK's stream sample does over MQTT over
// WebSocket: its own upgrade request (iothubtransportmqtt_websockets.c and
// uws_client.c: subprotocol "MQTT" in capitals, no Origin), MQTT 3.1.1
// CONNECT and SUBSCRIBE at QoS 0, an answer res/200 at QoS 0, and each
// stream opened offering "MQTT" again with the bearer token, its data
// echoed back, and the hub's close frame answered.
type azureCDevice struct {
	conn net.Conn
	r    *wsutil.Reader // the hub's frames, whose payloads make the MQTT byte stream
	id   string
	tls  *tls.Config
	addr string // the address dialed: the hub's, or a balancer's
}

// dialAzureC connects such a device to the HTTPS listener at addr.
func dialAzureC(t *testing.T, addr string, tlsConf *tls.Config, connStr string) *azureCDevice {
	t.Helper()
	cs, err := sas.ParseConnectionString(connStr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, tlsConf)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	host, port, _ := net.SplitHostPort(addr)
	fmt.Fprintf(conn, "GET /$iothub/websocket HTTP/1.1\r\n"+
		"Host: %s:%s\r\n"+
		"Upgrade: websocket\r\n"+
		"Connection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\n"+
		"Sec-WebSocket-Protocol: MQTT\r\n"+
		"Sec-WebSocket-Version: 13\r\n"+
		"\r\n", host, port, key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade answer: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s", resp.Status)
	}
	// The exact token offered comes back, as RFC 6455 §4.2.2 asks.
	if got := resp.Header.Values("Sec-Websocket-Protocol"); len(got) != 1 || got[0] != "MQTT" {
		t.Fatalf("upgrade selected subprotocol %q, want exactly \"MQTT\"", got)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got := resp.Header.Get("Sec-Websocket-Accept"); got != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("Sec-WebSocket-Accept %q", got)
	}

	d := &azureCDevice{
		conn: conn,
		r:    &wsutil.Reader{Source: br, State: ws.StateClientSide},
		id:   cs.DeviceID, tls: tlsConf, addr: addr,
	}
	tok, err := cs.Token(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 240,
			ClientIdentifier: cs.DeviceID,
			UsernameFlag:     true,
			Username:         []byte(cs.HostName + "/" + cs.DeviceID + "/?api-version=2019-05-30-preview&DeviceClientType=iothubclient%2f1.3.0-public-preview%20(native%3b%20Linux%3b%20x86_64)"),
			PasswordFlag:     true, Password: []byte(tok),
		},
	}
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	if err := d.send(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := d.packet(); err != nil || typ != packets.Connack || len(body) != 2 || body[1] != 0 {
		t.Fatalf("CONNACK: type %d body %v, %v", typ, body, err)
	}

	b.Reset()
	sub := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters: packets.Subscriptions{
			{Filter: wire.TopicRequestFilter, Qos: 0},
			{Filter: wire.TopicResponseFilter, Qos: 0},
		},
	}
	if err := sub.SubscribeEncode(&b); err != nil {
		t.Fatal(err)
	}
	if err := d.send(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := d.packet(); err != nil || typ != packets.Suback || !bytes.Equal(body, []byte{0, 1, 0, 0}) {
		t.Fatalf("SUBACK: type %d body %v, %v", typ, body, err)
	}
	conn.SetDeadline(time.Time{})
	return d
}

// send writes one MQTT packet in one masked binary frame.
func (d *azureCDevice) send(pkt []byte) error {
	return wsutil.WriteClientBinary(d.conn, pkt)
}

// packet reads the next MQTT packet and returns its type and body.
func (d *azureCDevice) packet() (byte, []byte, error) {
	var hdr [1]byte
	var body []byte
	var n, mul int
	for i := 0; ; i++ {
		b, err := d.readByte()
		if err != nil {
			return 0, nil, fmt.Errorf("read MQTT packet: %w", err)
		}
		switch {
		case i == 0:
			hdr[0] = b
		default:
			n += int(b&0x7f) << mul
			mul += 7
		}
		if i > 0 && b&0x80 == 0 {
			break
		}
	}
	body = make([]byte, n)
	for i := range body {
		b, err := d.readByte()
		if err != nil {
			return 0, nil, fmt.Errorf("read MQTT packet: %w", err)
		}
		body[i] = b
	}
	return hdr[0] >> 4, body, nil
}

// readByte reads one byte of the MQTT byte stream carried in the hub's
// binary messages.
func (d *azureCDevice) readByte() (byte, error) {
	var b [1]byte
	for {
		n, err := d.r.Read(b[:])
		if n == 1 {
			return b[0], nil
		}
		if err != nil && !errors.Is(err, wsutil.ErrNoFrameAdvance) && err != io.EOF {
			return 0, err
		}
		h, err := d.r.NextFrame()
		if err != nil {
			return 0, err
		}
		if h.OpCode != ws.OpBinary && h.OpCode != ws.OpContinuation {
			return 0, fmt.Errorf("frame %v on the MQTT connection", h.OpCode)
		}
	}
}

// serveOneStream waits for the next stream request, accepts it (res/200
// at QoS 0, as the C SDK answers), opens the stream as the C SDK does and
// echoes every message until the hub's close frame, which it answers. It
// returns the request and the error that ended the stream, nil for the
// close handshake followed by the hub closing the connection.
func (d *azureCDevice) serveOneStream() (wire.StreamRequest, error) {
	var req wire.StreamRequest
	typ, body, err := d.packet()
	if err != nil {
		return req, err
	}
	if typ != packets.Publish || len(body) < 2 || len(body) < 2+int(binary.BigEndian.Uint16(body)) {
		return req, fmt.Errorf("want a PUBLISH, got type %d body %q", typ, body)
	}
	topic := string(body[2 : 2+int(binary.BigEndian.Uint16(body))])
	if req, err = wire.ParseStreamRequest(topic); err != nil {
		return req, fmt.Errorf("stream request %q: %w", topic, err)
	}
	var b bytes.Buffer
	res := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: wire.ResponseTopic(200, req.RID)}
	if err := res.PublishEncode(&b); err != nil {
		return req, err
	}
	if err := d.send(b.Bytes()); err != nil {
		return req, err
	}

	// The stream URL names the hub's public address, which is the one
	// dialed, a balancer's included.
	dialer := ws.Dialer{
		TLSConfig: d.tls,
		Protocols: []string{"MQTT"},
		Header:    ws.HandshakeHeaderString("Authorization: Bearer " + req.Token + "\r\n"),
	}
	conn, br, hs, err := dialer.Dial(context.Background(), req.URL)
	if err != nil {
		return req, fmt.Errorf("stream upgrade: %w", err)
	}
	defer conn.Close()
	if hs.Protocol != "" {
		return req, fmt.Errorf("the streaming endpoint selected %q; the C SDK checks only for 101", hs.Protocol)
	}
	var rw io.ReadWriter = conn
	if br != nil {
		rw = struct {
			io.Reader
			io.Writer
		}{io.MultiReader(br, conn), conn}
	}
	for {
		// ReadServerData answers a close frame with one of its own.
		msg, op, err := wsutil.ReadServerData(rw)
		if err != nil {
			var closed wsutil.ClosedError
			if !errors.As(err, &closed) {
				return req, err
			}
			// The hub closes the connection once it has the answer.
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, conn); err != nil {
				return req, fmt.Errorf("after the close handshake: %w", err)
			}
			return req, nil
		}
		if err := wsutil.WriteClientMessage(conn, op, msg); err != nil {
			return req, err
		}
	}
}

// TestAzureCDeviceOverWebSocket: a device that opens MQTT over WebSocket as
// the Azure C SDK does (subprotocol "MQTT" in capitals) connects, takes a
// stream request, and its stream carries data both ways and ends with a
// close handshake. Offering no MQTT subprotocol at all is still refused,
// and the refusal is logged with what was offered.
func TestAzureCDeviceOverWebSocket(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	h := startHub(t, hubOptions{logTo: &log})
	d := dialAzureC(t, h.Addr, h.TLS, h.addDevice(t, "cdev"))

	type result struct {
		req wire.StreamRequest
		err error
	}
	done := make(chan result, 1)
	go func() {
		req, err := d.serveOneStream()
		done <- result{req, err}
	}()
	c, err := h.service(t).OpenStream(context.Background(), "cdev", "echo")
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	go c.Write(payload)
	back := make([]byte, len(payload))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if !bytes.Equal(back, payload) {
		t.Fatal("echo differs")
	}
	c.Close()
	r := <-done
	if r.err != nil {
		t.Errorf("device side of the stream ended with %v, want a close handshake", r.err)
	}
	if r.req.Name != "echo" {
		t.Errorf("request %+v", r.req)
	}

	// Another subprotocol only: 101 (the handshake is done before the
	// check), then close 1008, and a log line that says why.
	wd := ws.Dialer{TLSConfig: h.TLS, Protocols: []string{"xmpp"}}
	conn, br, _, err := wd.Dial(context.Background(), "wss://"+h.Addr+wire.PathMQTTWebSocket)
	if err != nil {
		t.Fatalf("dial offering xmpp: %v", err)
	}
	defer conn.Close()
	var src io.Reader = conn
	if br != nil {
		src = io.MultiReader(br, conn)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := wstest.ReadFrame(src, ws.MaxControlFramePayloadSize)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if code, _ := ws.ParseCloseFrameData(f.Payload); f.Header.OpCode != ws.OpClose || code != ws.StatusPolicyViolation {
		t.Errorf("got %v %v, want close 1008", f.Header.OpCode, f.Payload)
	}
	eventually(t, 10*time.Second, "a log line for the refused upgrade", func() bool {
		for line := range strings.Lines(log.String()) {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "websocket upgrade refused" {
				continue
			}
			offered, _ := json.Marshal(rec["subprotocols"])
			if rec["level"] != "INFO" || !strings.Contains(rec["why"].(string), "MQTT subprotocol") || string(offered) != `["xmpp"]` {
				t.Fatalf("log line %s", line)
			}
			return true
		}
		return false
	})
}
