package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// logRecords is every JSON log line in log whose message is msg.
func logRecords(log, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(log, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// waitRecord waits for the first JSON log line in log whose message is msg.
func waitRecord(t *testing.T, log *syncBuffer, msg, what string) map[string]any {
	t.Helper()
	var rec map[string]any
	eventually(t, 20*time.Second, what, func() bool {
		if recs := logRecords(log.String(), msg); len(recs) > 0 {
			rec = recs[0]
		}
		return rec != nil
	})
	return rec
}

// str is a log record's attribute as a string ("" if absent).
func str(rec map[string]any, key string) string {
	s, _ := rec[key].(string)
	return s
}

// durationAttr is a duration attribute of a JSON log record (slog writes
// nanoseconds).
func durationAttr(rec map[string]any, key string) (time.Duration, bool) {
	n, ok := rec[key].(float64)
	return time.Duration(n), ok
}

// loopbackAddr reports whether s is 127.0.0.1:port.
func loopbackAddr(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && host == "127.0.0.1" && port != "" && port != "0"
}

const (
	displacedMsg = "displaced by another connection with this device's identity"
	takenOverMsg = "session taken over"
)

// dialTwin connects one of two device SDK clients that hold the same key,
// logging as JSON into log, with short reconnect delays (MaxBackoff maxB).
func dialTwin(t *testing.T, h *testHub, connStr string, tr device.Transport, maxB time.Duration, log io.Writer) *device.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dc, err := device.Dial(ctx, connStr, devOptions(device.Options{
		TLSConfig: h.TLS, Transport: tr, MQTTAddress: h.MQTTAddr,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: maxB,
		Logger: slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}))
	if err != nil {
		t.Fatalf("device dial: %v", err)
	}
	t.Cleanup(func() { dc.Close() })
	return dc
}

// minFlapTime is the least time n takeovers can take between two twins
// that back off as the device SDK does: each takeover after the first is
// the reconnect of the twin the one before displaced, which waits at
// least half of MaxBackoff·2ʲ⁻¹ after its jth displacement in a row. The
// twins take turns: the first twin's jth displacement is takeover 2j-1,
// the second's is takeover 2j.
func minFlapTime(n int, maxB time.Duration) time.Duration {
	var total time.Duration
	for k := 2; k <= n; k++ {
		j := k / 2 // the displacement in a row that takeover k-1 was for its victim
		total += maxB << (j - 1) / 2
	}
	return total
}

// TestDuplicateDeviceKey: two agents hold one device's key (a cloned SD
// card). Each connection takes the other's session over, as Azure's
// rule has it; the hub logs the takeover with both addresses and counts
// them in the device's record, the displaced client logs why with a
// hint, and the two back off rather than knock each other off every few
// seconds.
func TestDuplicateDeviceKey(t *testing.T) {
	t.Parallel()
	var hubLog syncBuffer
	h := startHub(t, hubOptions{logTo: &hubLog})
	connStr := h.addDevice(t, "dev1")
	svc := h.service(t)
	const maxB = 100 * time.Millisecond
	const takeovers = 8

	var logA, logB syncBuffer
	dialTwin(t, h, connStr, device.TLS, maxB, &logA)
	start := time.Now()
	dialTwin(t, h, connStr, device.WebSocket, maxB, &logB)

	var d *wire.Device
	eventually(t, 60*time.Second, fmt.Sprintf("%d takeovers in the device's record", takeovers), func() bool {
		var err error
		d, err = svc.GetDevice(context.Background(), "dev1")
		if err != nil {
			t.Fatal(err)
		}
		return d.Takeovers != nil && d.Takeovers.LastHour >= takeovers
	})
	elapsed := time.Since(start)
	// Without a back-off the twins take over every few milliseconds.
	if least := minFlapTime(takeovers, maxB); elapsed < least {
		t.Errorf("%d takeovers in %v: faster than the back-off allows (%v at least)", d.Takeovers.LastHour, elapsed, least)
	}
	tk := d.Takeovers
	if !loopbackAddr(tk.DisplacedRemote) || !loopbackAddr(tk.ByRemote) || tk.DisplacedRemote == tk.ByRemote || time.Since(tk.Last) > time.Minute {
		t.Errorf("GET /devices/dev1 takeovers = %+v, want the last one's two remote addresses and time", *tk)
	}

	// The hub: the first takeover at info, the next ones as a warning
	// (one a minute per device), each with both addresses. The first is
	// the second twin (by) displacing the first; the second the first twin
	// coming back and displacing the second.
	hubLines := logRecords(hubLog.String(), takenOverMsg)
	var first, warn map[string]any
	for _, rec := range hubLines {
		if str(rec, "device") != "dev1" {
			continue
		}
		switch str(rec, "level") {
		case "WARN":
			if warn == nil {
				warn = rec
			}
		case "INFO":
			if first == nil {
				first = rec
			}
		}
	}
	if first == nil || warn == nil {
		t.Fatalf("the hub logged no %q line at info then at warn:\n%s", takenOverMsg, hubLog.String())
	}
	for _, rec := range []map[string]any{first, warn} {
		if !loopbackAddr(str(rec, "displaced")) || !loopbackAddr(str(rec, "by")) || str(rec, "displaced") == str(rec, "by") {
			t.Errorf("hub takeover line without both remote addresses: %v", rec)
		}
	}
	if str(warn, "displaced") != str(first, "by") {
		t.Errorf("the warning's displaced connection %s is not the one that took over first (%s)", str(warn, "displaced"), str(first, "by"))
	}
	if !strings.Contains(str(warn, "hint"), "key") || warn["last_hour"] == nil {
		t.Errorf("hub warning without a hint or count: %v", warn)
	}

	// Each twin: why, with the other's address, the hint, and waits that
	// grow.
	for _, c := range []struct {
		name    string
		log     *syncBuffer
		firstBy string // the address the hub logged for its first displacement
	}{
		{"first twin", &logA, str(first, "by")},
		{"second twin", &logB, str(warn, "by")},
	} {
		lines := logRecords(c.log.String(), displacedMsg)
		if len(lines) < 2 {
			t.Fatalf("%s logged %d %q lines, want 2 or more:\n%s", c.name, len(lines), displacedMsg, c.log.String())
		}
		if got := str(lines[0], "from"); got != c.firstBy {
			t.Errorf("%s was displaced from %q, the hub says by %q", c.name, got, c.firstBy)
		}
		for i, rec := range lines {
			if str(rec, "level") != "WARN" || !strings.Contains(str(rec, "hint"), "cloned SD card") || !loopbackAddr(str(rec, "from")) {
				t.Errorf("%s: displacement line %v", c.name, rec)
			}
			if n, _ := rec["in_a_row"].(float64); int(n) != i+1 {
				t.Errorf("%s: displacement %d says in_a_row=%v", c.name, i+1, rec["in_a_row"])
			}
			wait, ok := durationAttr(rec, "retry_in")
			if least := maxB << i / 2; !ok || wait < least {
				t.Errorf("%s: displacement %d waits %v, want %v at least", c.name, i+1, rec["retry_in"], least)
			}
		}
		if lost := logRecords(c.log.String(), "connection to hub lost"); len(lost) != 0 {
			t.Errorf("%s logged a displacement as a lost connection: %v", c.name, lost[0])
		}
	}
}

// recordingConn keeps every byte read through it.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.got.Bytes())
}

// readPacket reads one MQTT packet: its fixed header, and a PUBLISH's
// topic and payload. io.EOF means the stream ended between packets.
func readPacket(r *bufio.Reader) (*packets.Packet, error) {
	first, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	var fh packets.FixedHeader
	if err := fh.Decode(first); err != nil {
		return nil, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return nil, err
	}
	fh.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("truncated packet: %w", err)
	}
	pk := &packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
	if fh.Type == packets.Publish {
		if err := pk.PublishDecode(body); err != nil {
			return nil, err
		}
	}
	return pk, nil
}

// mqttPackets splits an MQTT byte stream into its packets.
func mqttPackets(t *testing.T, b []byte) []packets.Packet {
	t.Helper()
	var out []packets.Packet
	r := bufio.NewReader(bytes.NewReader(b))
	for {
		pk, err := readPacket(r)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("MQTT stream: %v", err)
		}
		out = append(out, *pk)
	}
}

// rawDevice is a device on a bare MQTT 3.1.1 connection over TLS, whose
// every received byte the test reads.
type rawDevice struct {
	conn *tls.Conn
	br   *bufio.Reader
}

// dialRaw connects and subscribes a device naming itself clientType in
// its username (DeviceClientType), as Azure's SDKs and Tether's do.
func dialRaw(t *testing.T, h *testHub, connStr, clientType string) *rawDevice {
	t.Helper()
	conn, err := tls.Dial("tcp", h.MQTTAddr, h.TLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	d := &rawDevice{conn: conn, br: bufio.NewReader(conn)}
	b := bytes.NewBuffer(connectPacketAs(t, connStr, clientType))
	sub := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: wire.TopicRequestFilter}, {Filter: wire.TopicResponseFilter}},
	}
	if err := sub.SubscribeEncode(b); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []byte{packets.Connack, packets.Suback} {
		pk := d.next(t)
		if pk == nil || pk.FixedHeader.Type != want {
			t.Fatalf("%s: got %v, want packet type %d", clientType, pk, want)
		}
	}
	return d
}

// next reads the next packet, or returns nil at the connection's end (a
// close between packets; a timeout fails the test).
func (d *rawDevice) next(t *testing.T) *packets.Packet {
	t.Helper()
	pk, err := readPacket(d.br)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("no packet and no close: %v", err)
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset"):
		t.Fatalf("reading a packet: %v", err)
	}
	return pk
}

// rest reads every packet up to the connection's end.
func (d *rawDevice) rest(t *testing.T) []packets.Packet {
	t.Helper()
	var out []packets.Packet
	for {
		pk := d.next(t)
		if pk == nil {
			return out
		}
		out = append(out, *pk)
	}
}

// packetTypes names the packets' types, for messages.
func packetTypes(pks []packets.Packet) string {
	var s []string
	for _, pk := range pks {
		name := packets.PacketNames[pk.FixedHeader.Type]
		if pk.FixedHeader.Type == packets.Publish {
			name += " " + pk.TopicName
		}
		s = append(s, name)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// TestTakeoverNotice: the session a newer connection takes over ends
// with what Azure IoT Hub clients saw before (DISCONNECT, then the close)
// for every client but Tether's device SDK, which is told first, in a
// message of Tether's own, that a connection from the new connection's
// address took over. An Azure client on paho and one as the Azure C SDK
// speaks over WebSocket get no message at all.
func TestTakeoverNotice(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	connStr := h.addDevice(t, "dev1")
	disconnect := func(pks []packets.Packet) bool {
		return len(pks) == 1 && pks[0].FixedHeader.Type == packets.Disconnect
	}

	t.Run("Tether's SDK", func(t *testing.T) {
		old := dialRaw(t, h, connStr, "tether-go/0.1")
		by := dialRaw(t, h, connStr, "tether-go/0.1")
		got := old.rest(t)
		want := wire.TakenOverTopic(by.conn.LocalAddr().String())
		if len(got) != 2 || got[0].FixedHeader.Type != packets.Publish || got[0].TopicName != want ||
			got[0].FixedHeader.Qos != 0 || len(got[0].Payload) != 0 || !disconnect(got[1:]) {
			t.Fatalf("the displaced connection got %s, want [PUBLISH %s, DISCONNECT]", packetTypes(got), want)
		}
	})

	t.Run("Azure client, raw", func(t *testing.T) {
		old := dialRaw(t, h, connStr, "azure-iot-device/1.18.0 (node v20.11.0; Linux; x64)")
		dialRaw(t, h, connStr, "tether-go/0.1")
		if got := old.rest(t); !disconnect(got) {
			t.Fatalf("the displaced Azure connection got %s, want only DISCONNECT as before", packetTypes(got))
		}
	})

	t.Run("Azure client on paho", func(t *testing.T) {
		cs, _ := sas.ParseConnectionString(connStr)
		tok, err := cs.Token(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var rec atomic.Pointer[recordingConn]
		lost := make(chan error, 1)
		unexpected := make(chan string, 8)
		opts := paho.NewClientOptions().AddBroker("tls://" + h.MQTTAddr).
			SetClientID(cs.DeviceID).
			SetUsername(cs.HostName + "/" + cs.DeviceID + "/?api-version=2020-09-30&DeviceClientType=" + url.QueryEscape("azure-iot-device/1.18.0")).
			SetPassword(tok).SetProtocolVersion(4).SetCleanSession(true).
			SetAutoReconnect(false).SetConnectRetry(false).
			SetCustomOpenConnectionFn(func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
				c, err := tls.Dial("tcp", u.Host, h.TLS)
				if err != nil {
					return nil, err
				}
				r := &recordingConn{Conn: c}
				rec.Store(r)
				return r, nil
			}).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { unexpected <- m.Topic() }).
			SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
		c := paho.NewClient(opts)
		if tk := c.Connect(); !tk.WaitTimeout(20*time.Second) || tk.Error() != nil {
			t.Fatalf("paho connect: %v", tk.Error())
		}
		defer c.Disconnect(0)
		filters := map[string]byte{wire.TopicRequestFilter: 0, wire.TopicResponseFilter: 0}
		if tk := c.SubscribeMultiple(filters, nil); !tk.WaitTimeout(20*time.Second) || tk.Error() != nil {
			t.Fatalf("paho subscribe: %v", tk.Error())
		}

		dialRaw(t, h, connStr, "tether-go/0.1")
		select {
		case <-lost:
		case <-time.After(20 * time.Second):
			t.Fatal("paho's connection was not taken over")
		}
		select {
		case topic := <-unexpected:
			t.Fatalf("paho got a message on %s", topic)
		default:
		}
		got := mqttPackets(t, rec.Load().bytes())
		if len(got) < 2 || got[0].FixedHeader.Type != packets.Connack || got[1].FixedHeader.Type != packets.Suback || !disconnect(got[2:]) {
			t.Fatalf("paho read %s, want [CONNACK, SUBACK, DISCONNECT] as before", packetTypes(got))
		}
	})

	t.Run("Azure C SDK over WebSocket", func(t *testing.T) {
		old := dialAzureC(t, h.Addr, h.TLS, connStr)
		old.conn.SetDeadline(time.Now().Add(30 * time.Second))
		dialRaw(t, h, connStr, "tether-go/0.1")
		typ, _, err := old.packet()
		if err != nil || typ != packets.Disconnect {
			t.Fatalf("the displaced C SDK device read packet type %d (%v), want DISCONNECT", typ, err)
		}
		if typ, _, err := old.packet(); err == nil {
			t.Fatalf("after DISCONNECT, packet type %d, want the connection's end", typ)
		}
	})
}

// TestTakeoverAcrossNodes: the twins connect to two nodes of one hub. The
// node that drops the older session for the newer one elsewhere logs the
// takeover with both addresses and tells the displaced SDK client which
// address took over.
func TestTakeoverAcrossNodes(t *testing.T) {
	t.Parallel()
	natsURL := startNATS(t)
	var log1, log2 syncBuffer
	n1 := startHub(t, hubOptions{nats: natsURL, logTo: &log1})
	n2 := startHub(t, hubOptions{nats: natsURL, logTo: &log2})
	connStr := n1.addDevice(t, "dev1")
	// One client configuration trusting both nodes' CAs.
	pool := x509.NewCertPool()
	for _, n := range []*testHub{n1, n2} {
		pem, err := os.ReadFile(filepath.Join(n.Dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(pem)
	}
	n1.TLS, n2.TLS = &tls.Config{RootCAs: pool}, &tls.Config{RootCAs: pool}

	var logA, logB syncBuffer
	dialTwin(t, n1, connStr, device.TLS, time.Minute, &logA)
	dialTwin(t, n2, connStr, device.TLS, time.Minute, &logB)

	line := waitRecord(t, &log1, takenOverMsg, "node 1 to log the takeover")
	if str(line, "device") != "dev1" || !loopbackAddr(str(line, "displaced")) || !loopbackAddr(str(line, "by")) || str(line, "displaced") == str(line, "by") {
		t.Errorf("node 1's takeover line: %v", line)
	}
	displaced := waitRecord(t, &logA, displacedMsg, "the first twin to log its displacement")
	if str(displaced, "from") != str(line, "by") {
		t.Errorf("the first twin says it was displaced from %q, node 1 says by %q", str(displaced, "from"), str(line, "by"))
	}
	// A minute's back-off: the first twin stays away for 30 s at least.
	if wait, ok := durationAttr(displaced, "retry_in"); !ok || wait < 30*time.Second {
		t.Errorf("the first twin waits %v after a displacement, want 30s at least (half of MaxBackoff)", displaced["retry_in"])
	}
	eventually(t, 20*time.Second, "the takeover in the device's record", func() bool {
		d, err := n2.service(t).GetDevice(context.Background(), "dev1")
		return err == nil && d.Takeovers != nil && d.Takeovers.LastHour == 1 && d.Takeovers.ByRemote == str(line, "by")
	})
}
