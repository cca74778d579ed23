package hub_test

// The harness of the mux session tests: a hub node run by hub/node as
// tetherd runs it (TLS, batchconn beneath it, MQTT over TLS), and small
// clients of the session protocol built from internal/muxconn and wire
// alone: a service opening streams, a device taking the streams the hub
// pushes, and a device's MQTT control channel (paho).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gobwas/ws"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/internal/wsframe"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// muxWait bounds every wait of these tests.
const muxWait = 15 * time.Second

// muxHub is one hub node on loopback.
type muxHub struct {
	n     *node.Node
	srv   *hub.Server
	reg   *registry.Registry
	addr  string // 127.0.0.1:port of HTTPS
	mqtt  string // 127.0.0.1:port of MQTT over TLS
	tls   *tls.Config
	token string // a service token of iothubowner
}

// startMuxHub starts a node; edit, when set, changes its configuration
// first. It has no drain unless edit gives it one.
func startMuxHub(t *testing.T, edit func(*node.Config)) *muxHub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mqttLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{
		DataDir:      filepath.Join(t.TempDir(), "data"),
		HostNames:    []string{"127.0.0.1"},
		MQTT:         mqttLn,
		Cluster:      cluster.Options{Name: "test"},
		DrainTimeout: -1,
		Limits:       hub.Limits{AuthFailures: -1, AuthFailureRatePerSource: -1},
		Logger:       slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&cfg)
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	h := &muxHub{
		n: n, srv: n.Server(), reg: n.Registry(), addr: n.HTTPAddr().String(), mqtt: n.MQTTAddr().String(),
		tls: n.ClientTLS(),
	}
	h.token = h.policyToken(t, n.Owner().Name)
	return h
}

// newKey is a fresh symmetric key.
func newKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// addDevice registers a device with a fresh key and returns its SAS token.
func (h *muxHub) addDevice(t *testing.T, id string) string {
	t.Helper()
	key := newKey()
	_, _, err := h.reg.Put(t.Context(), wire.Device{
		DeviceID: id, Status: wire.StatusEnabled,
		Authentication: wire.Authentication{Type: "sas", SymmetricKey: &wire.SymmetricKey{PrimaryKey: key, SecondaryKey: newKey()}},
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.New("127.0.0.1/devices/"+id, key, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// policyToken is a token of the policy name.
func (h *muxHub) policyToken(t *testing.T, name string) string {
	t.Helper()
	p, err := h.reg.Policy(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.New("127.0.0.1", p.PrimaryKey, p.Name, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dial opens a session at path with token.
func (h *muxHub) dial(t *testing.T, path, token string) (*yamux.Session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), muxWait)
	defer cancel()
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", token)
	}
	s, err := muxconn.Dial(ctx, "wss://"+h.addr+path, hdr, h.tls)
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// serviceSession opens a service's session with the owner's token.
func (h *muxHub) serviceSession(t *testing.T) *yamux.Session {
	t.Helper()
	s, err := h.dial(t, wire.PathMuxService, h.token)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dataSession opens device id's data session and waits until the hub
// has it (the 101 leaves before the hub registers the session; a stream
// asked for in between goes over MQTT).
func (h *muxHub) dataSession(t *testing.T, id, token string) *yamux.Session {
	t.Helper()
	before := h.metric(t, `tether_mux_sessions_total{kind="device"}`)
	s, err := h.dial(t, wire.MuxDevicePath(id, ""), token)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(muxWait)
	for h.metric(t, `tether_mux_sessions_total{kind="device"}`) == before {
		if time.Now().After(deadline) {
			t.Fatal("the hub did not register the data session")
		}
		time.Sleep(time.Millisecond)
	}
	return s
}

// sessionDevice registers device id and connects it as Tether's SDK
// would: its MQTT control channel and its data session, served by
// serveDevice with decide.
func (h *muxHub) sessionDevice(t *testing.T, id string, decide func(wire.MuxRequest) int) (*mqttDevice, *yamux.Session, <-chan pushed) {
	t.Helper()
	tok := h.addDevice(t, id)
	mq := h.connectMQTT(t, id, tok, true)
	ds := h.dataSession(t, id, tok)
	return mq, ds, serveDevice(t, ds, decide)
}

// mqttDevice is a device's control channel.
type mqttDevice struct {
	c    paho.Client
	reqs chan wire.StreamRequest
	lost chan struct{}
}

// connectMQTT connects device id with token over MQTT; tether makes its
// DeviceClientType Tether's SDK's. Requests are collected, not answered.
func (h *muxHub) connectMQTT(t *testing.T, id, token string, tether bool) *mqttDevice {
	t.Helper()
	d := &mqttDevice{reqs: make(chan wire.StreamRequest, 64), lost: make(chan struct{})}
	clientType := "test"
	if tether {
		clientType = wire.DeviceClientTypeTether + "test"
	}
	opts := paho.NewClientOptions().AddBroker("tls://" + h.mqtt).SetTLSConfig(h.tls).
		SetClientID(id).
		SetUsername("127.0.0.1/" + id + "/?api-version=" + wire.APIVersion + "&DeviceClientType=" + clientType).
		SetPassword(token).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(muxWait).
		SetConnectionLostHandler(func(paho.Client, error) { close(d.lost) })
	d.c = paho.NewClient(opts)
	if tok := d.c.Connect(); !tok.WaitTimeout(muxWait) || tok.Error() != nil {
		t.Fatalf("device %s: MQTT connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { d.c.Disconnect(0) })
	tok := d.c.Subscribe(wire.TopicRequestFilter, 0, func(_ paho.Client, m paho.Message) {
		if req, err := wire.ParseStreamRequest(m.Topic()); err == nil {
			d.reqs <- req
		}
	})
	if !tok.WaitTimeout(muxWait) || tok.Error() != nil {
		t.Fatalf("device %s: subscribe: %v", id, tok.Error())
	}
	return d
}

// answer publishes the device's answer to req over MQTT.
func (d *mqttDevice) answer(t *testing.T, req wire.StreamRequest, status int) {
	t.Helper()
	if tok := d.c.Publish(wire.ResponseTopic(status, req.RID), 0, false, ""); !tok.WaitTimeout(muxWait) || tok.Error() != nil {
		t.Fatalf("answering over MQTT: %v", tok.Error())
	}
}

// pushed is a stream the hub pushed on a data session: its request and,
// when accepted, the stream as a tether-stream.v1 conn.
type pushed struct {
	req  wire.MuxRequest
	conn *wsconn.Conn // nil when rejected
	// early is what the stream carried behind the request when the
	// device rejected it (read to the end), nil when accepted.
	early []byte
}

// serveDevice takes the streams the hub pushes on s: decide gives the
// device's status for each; accepted ones echo everything back and close
// once the service's end-of-stream comes. Each is reported on the
// returned channel.
func serveDevice(t *testing.T, s *yamux.Session, decide func(wire.MuxRequest) int) <-chan pushed {
	ch := make(chan pushed, 256)
	go func() {
		for {
			st, err := s.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				st.SetReadDeadline(time.Now().Add(muxWait))
				var req wire.MuxRequest
				if err := wire.ReadMuxHeader(st, &req); err != nil {
					t.Errorf("device: reading the request: %v", err)
					st.Close()
					return
				}
				st.SetReadDeadline(time.Time{})
				status := decide(req)
				if err := wire.WriteMuxHeader(st, wire.MuxAnswer{Status: status}); err != nil {
					t.Errorf("device: answering: %v", err)
					return
				}
				if status != http.StatusOK {
					// What came behind the header, as far as it came
					// before the hub ended the stream.
					st.SetReadDeadline(time.Now().Add(muxWait))
					early, _ := io.ReadAll(st)
					st.Close()
					ch <- pushed{req: req, early: early}
					return
				}
				c := wsconn.OnSession(st)
				ch <- pushed{req: req, conn: c}
				_, _ = io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return ch
}

// openStream opens a stream on a service's session: open, then early
// (sent in the same write as masked binary frames, one per element), then
// the hub's answer. On acceptance the stream is returned as a conn.
func openStream(t *testing.T, s *yamux.Session, open wire.MuxOpen, early ...[]byte) (wire.MuxAnswer, *wsconn.Conn) {
	t.Helper()
	st, err := s.OpenStream()
	if err != nil {
		t.Fatalf("opening a stream: %v", err)
	}
	b, err := wire.AppendMuxHeader(nil, open)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range early {
		b = wsframe.AppendMaskedFrame(b, ws.OpBinary, p)
	}
	if _, err := st.Write(b); err != nil {
		t.Fatalf("writing the header: %v", err)
	}
	st.SetReadDeadline(time.Now().Add(muxWait))
	var ans wire.MuxAnswer
	if err := wire.ReadMuxHeader(st, &ans); err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	st.SetReadDeadline(time.Time{})
	if !ans.Accepted {
		// The hub ends the stream after its answer.
		if _, err := io.ReadAll(st); err != nil && !errors.Is(err, yamux.ErrConnectionReset) {
			t.Errorf("after a refusal: %v", err)
		}
		st.Close()
		return ans, nil
	}
	return ans, wsconn.OnSession(st)
}

// recv receives from ch within muxWait.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(muxWait):
		t.Fatal("nothing came")
		panic("unreachable")
	}
}

// post asks for a stream to device id the Azure way, with the owner's
// token, and returns the answer's status.
func (h *muxHub) post(t *testing.T, id, name string) int {
	req, err := http.NewRequestWithContext(t.Context(), "POST", "https://"+h.addr+"/twins/"+id+"/streams/"+name, nil)
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", h.token)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.tls}}
	defer client.CloseIdleConnections()
	res, err := client.Do(req)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// rest calls the hub's REST API with the owner's token, body (when not
// nil) as JSON, and returns the answer's status.
func (h *muxHub) rest(t *testing.T, method, path string, body any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "https://"+h.addr+path+"?api-version="+wire.APIVersion, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", h.token)
	req.Header.Set("If-Match", "*")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.tls}}
	defer client.CloseIdleConnections()
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// echo writes msg on c and reads it back.
func echo(c net.Conn, msg []byte) error {
	c.SetDeadline(time.Now().Add(muxWait))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("echo differs")
	}
	return nil
}

// metric reads one sample of the node's metrics, by its name with labels
// as the text format writes it ("tether_mux_streams_total{kind=\"service\"}").
func (h *muxHub) metric(t *testing.T, sample string) string {
	t.Helper()
	rec := &bodyRecorder{header: http.Header{}}
	req, _ := http.NewRequest("GET", "/metrics", nil)
	h.srv.MetricsHandler().ServeHTTP(rec, req)
	sc := bufio.NewScanner(strings.NewReader(rec.body.String()))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return v
		}
	}
	t.Fatalf("no metric %s", sample)
	return ""
}

type bodyRecorder struct {
	header http.Header
	body   strings.Builder
}

func (r *bodyRecorder) Header() http.Header         { return r.header }
func (r *bodyRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *bodyRecorder) WriteHeader(int)             {}

// streamLogs reads the stream-log records of device id as they come
// (follow) until n were read.
func (h *muxHub) streamLogs(t *testing.T, id string, n int) []wire.StreamLogProperties {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), muxWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+h.addr+"/streamlogs?follow=true&deviceId="+id, nil)
	req.Header.Set("Authorization", h.token)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.tls}}
	defer client.CloseIdleConnections()
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	var out []wire.StreamLogProperties
	for len(out) < n {
		var rec wire.StreamLog
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("reading stream logs after %d records: %v", len(out), err)
		}
		p, err := rec.Props()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}
