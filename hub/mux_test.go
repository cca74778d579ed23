package hub_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/internal/wsframe"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

// accept is a device that accepts every stream.
func accept(wire.MuxRequest) int { return http.StatusOK }

// TestMuxHundredStreams: a service's session opens 100 streams at once to
// a device on its data session, each echoed; no MQTT request reaches the
// device, every stream is counted, and each has its stream-log record
// with its byte counts.
func TestMuxHundredStreams(t *testing.T) {
	h := startMuxHub(t, nil)
	mq, _, pushes := h.sessionDevice(t, "dev1", accept)
	svc := h.serviceSession(t)

	const n = 100
	var wg sync.WaitGroup
	ids := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "echo", UserAgent: "muxtest"})
			if c == nil {
				t.Errorf("stream %d: %+v", i, ans)
				return
			}
			defer c.Close()
			ids <- ans.StreamID
			for j := range 3 {
				if err := echo(c, fmt.Appendf(nil, "stream %d message %d", i, j)); err != nil {
					t.Errorf("stream %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	for range n {
		p := recv(t, pushes)
		if !seen[p.req.StreamID] || p.req.Name != "echo" || p.req.RID == "" {
			t.Errorf("pushed request %+v", p.req)
		}
	}
	select {
	case req := <-mq.reqs:
		t.Errorf("a request went over MQTT: %+v", req)
	default:
	}
	for kind, want := range map[string]string{"service": "100", "device": "100"} {
		if got := h.metric(t, `tether_mux_streams_total{kind="`+kind+`"}`); got != want {
			t.Errorf("%s streams: %s, want %s", kind, got, want)
		}
		if got := h.metric(t, `tether_mux_sessions_open{kind="`+kind+`"}`); got != "1" {
			t.Errorf("%s sessions open: %s, want 1", kind, got)
		}
	}
	recs := h.streamLogs(t, "dev1", n)
	for _, p := range recs {
		// "stream %d message %d" three times, each way.
		min := int64(3 * len("stream 0 message 0"))
		if p.Result != wire.ResultAccepted || p.BytesToDevice < min || p.BytesToService != p.BytesToDevice ||
			!seen[p.StreamID] || p.SDKVersion != "muxtest" || p.Policy != "iothubowner" || p.ServiceAddress == "" {
			t.Errorf("record %+v", p)
		}
	}
}

// TestMuxRejected: the device's rejection reaches the service with its
// status, the stream ends, and the session carries the next stream.
func TestMuxRejected(t *testing.T) {
	h := startMuxHub(t, nil)
	h.sessionDevice(t, "dev1", func(r wire.MuxRequest) int {
		if r.Name == "no" {
			return wire.AnswerTargetRefused
		}
		return http.StatusOK
	})
	svc := h.serviceSession(t)
	ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "no"})
	if c != nil || ans.Status != http.StatusOK || ans.Accepted || ans.DeviceStatus != wire.AnswerTargetRefused {
		t.Fatalf("answer %+v, want a rejection with %d", ans, wire.AnswerTargetRefused)
	}
	ans, c = openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "yes"})
	if c == nil {
		t.Fatalf("answer %+v", ans)
	}
	if err := echo(c, []byte("after a rejection")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	recs := h.streamLogs(t, "dev1", 2)
	if recs[0].Result != wire.ResultRejected || recs[1].Result != wire.ResultAccepted {
		t.Errorf("records %+v", recs)
	}
}

// TestMuxRequestErrors: what the POST answers as an error, a session
// stream answers in its MuxAnswer (status, Azure's code, message), and
// the session goes on. A malformed header (too long, not JSON) ends that
// stream alone, without an answer.
func TestMuxRequestErrors(t *testing.T) {
	h := startMuxHub(t, nil)
	h.addDevice(t, "offline")
	h.addDevice(t, "disabled")
	d, err := h.reg.Get(t.Context(), "disabled")
	if err != nil {
		t.Fatal(err)
	}
	d.Status = wire.StatusDisabled
	if _, _, err := h.reg.Put(t.Context(), d, "*"); err != nil {
		t.Fatal(err)
	}
	svc := h.serviceSession(t)
	for _, r := range []struct {
		open   wire.MuxOpen
		status int
		code   string
	}{
		{wire.MuxOpen{DeviceID: "nobody", Name: "ssh"}, 404, "DeviceNotFound"},
		{wire.MuxOpen{DeviceID: "offline", Name: "ssh"}, 404, "DeviceNotOnline"},
		{wire.MuxOpen{DeviceID: "disabled", Name: "ssh"}, 404, "DeviceNotOnline"},
		{wire.MuxOpen{DeviceID: "bad id!", Name: "ssh"}, 400, "ArgumentInvalid"},
		{wire.MuxOpen{DeviceID: "offline", Name: "a/b"}, 400, "ArgumentInvalid"},
		{wire.MuxOpen{DeviceID: "offline", Name: "ssh", ConnectTimeoutMs: -1}, 400, "ArgumentInvalid"},
	} {
		ans, c := openStream(t, svc, r.open)
		if c != nil || ans.Status != r.status || ans.ErrorCode != r.code || ans.Message == "" || ans.Accepted {
			t.Errorf("%+v: answer %+v, want %d %s", r.open, ans, r.status, r.code)
		}
	}

	for name, header := range map[string][]byte{
		"too long": binary.BigEndian.AppendUint16(nil, wire.MaxMuxHeader+1),
		"not JSON": append(binary.BigEndian.AppendUint16(nil, 5), "hello"...),
		"empty":    {0, 0},
	} {
		st, err := svc.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(header); err != nil {
			t.Fatal(err)
		}
		st.SetReadDeadline(time.Now().Add(muxWait))
		b, err := io.ReadAll(st)
		if len(b) > 0 || (err != nil && !errors.Is(err, yamux.ErrConnectionReset)) {
			t.Errorf("%s: read %q, %v; want the stream ended", name, b, err)
		}
		st.Close()
	}
	// The session is whole.
	ans, _ := openStream(t, svc, wire.MuxOpen{DeviceID: "nobody", Name: "ssh"})
	if ans.Status != 404 {
		t.Errorf("after malformed headers: %+v", ans)
	}
}

// TestMuxAuth: a session needs its credentials, as a REST call or an
// MQTT CONNECT does; a WebSocket upgrade without the subprotocol is
// refused.
func TestMuxAuth(t *testing.T) {
	h := startMuxHub(t, nil)
	tok := h.addDevice(t, "dev1")
	other := h.addDevice(t, "dev2")
	for _, r := range []struct {
		name, path, token string
	}{
		{"service without a token", wire.PathMuxService, ""},
		{"service with a device's token", wire.PathMuxService, tok},
		{"service without ServiceConnect", wire.PathMuxService, h.policyToken(t, "registryRead")},
		{"device without a token", wire.MuxDevicePath("dev1", ""), ""},
		{"device with another's token", wire.MuxDevicePath("dev1", ""), other},
		{"unknown device", wire.MuxDevicePath("nobody", ""), tok},
		{"device with a service's token", wire.MuxDevicePath("dev1", ""), h.token},
	} {
		_, err := h.dial(t, r.path, r.token)
		var herr *wsconn.HandshakeError
		if !errors.As(err, &herr) || herr.StatusCode != http.StatusUnauthorized || herr.Code != wire.CodeUnauthorized {
			t.Errorf("%s: %v, want 401 Unauthorized", r.name, err)
		}
	}
	if got := h.metric(t, "tether_mux_sessions_total{kind=\"service\"}"); got != "0" {
		t.Errorf("service sessions opened: %s", got)
	}

	// A plain GET and an upgrade offering another subprotocol: 400.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.tls}}
	defer client.CloseIdleConnections()
	for _, hdr := range []map[string]string{
		{},
		{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": wire.SubprotocolStream},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "https://"+h.addr+wire.PathMuxService, nil)
		req.Header.Set("Authorization", h.token)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("GET with %v: %d, want 400", hdr, res.StatusCode)
		}
	}
}

// TestMuxDeviceSessionReplaced: a device's second data session takes the
// place of its first, which is closed; streams go to the second.
func TestMuxDeviceSessionReplaced(t *testing.T) {
	h := startMuxHub(t, nil)
	tok := h.addDevice(t, "dev1")
	h.connectMQTT(t, "dev1", tok, true)
	first, err := h.dial(t, wire.MuxDevicePath("dev1", ""), tok)
	if err != nil {
		t.Fatal(err)
	}
	serveDevice(t, first, func(wire.MuxRequest) int {
		t.Error("a stream reached the replaced session")
		return 500
	})
	second, err := h.dial(t, wire.MuxDevicePath("dev1", ""), tok)
	if err != nil {
		t.Fatal(err)
	}
	pushes := serveDevice(t, second, accept)
	// The first is closed once the second took its place.
	select {
	case <-first.CloseChan():
	case <-time.After(muxWait):
		t.Fatal("the first session is still open")
	}
	svc := h.serviceSession(t)
	ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "ssh"})
	if c == nil {
		t.Fatalf("answer %+v", ans)
	}
	defer c.Close()
	if err := echo(c, []byte("to the second")); err != nil {
		t.Fatal(err)
	}
	if p := recv(t, pushes); p.req.StreamID != ans.StreamID {
		t.Errorf("pushed %+v", p.req)
	}
}

// TestMuxRequestProperty: a Tether device without a data session is told
// over MQTT that it may open one ($tmux=1), an Azure device is not, and a
// Tether device with one gets its streams on it. A data session that
// fails (here: answers what is no header) sends the stream over MQTT.
func TestMuxRequestProperty(t *testing.T) {
	h := startMuxHub(t, nil)
	svc := h.serviceSession(t)
	for _, r := range []struct {
		id     string
		tether bool
	}{{"tether", true}, {"azure", false}} {
		tok := h.addDevice(t, r.id)
		mq := h.connectMQTT(t, r.id, tok, r.tether)
		done := make(chan wire.MuxAnswer, 1)
		go func() {
			ans, _ := openStream(t, svc, wire.MuxOpen{DeviceID: r.id, Name: "ssh"})
			done <- ans
		}()
		req := recv(t, mq.reqs)
		if req.Mux != r.tether {
			t.Errorf("%s: request %+v, want Mux %v", r.id, req, r.tether)
		}
		mq.answer(t, req, wire.AnswerTargetRefused)
		if ans := recv(t, done); ans.DeviceStatus != wire.AnswerTargetRefused {
			t.Errorf("%s: answer %+v", r.id, ans)
		}
	}

	// A data session that fails (here: answers what is no header): the
	// POST's stream goes over MQTT after all; a session's stream, whose
	// early data went to the device with the request, fails.
	tok := h.addDevice(t, "broken")
	mq := h.connectMQTT(t, "broken", tok, true)
	ds := h.dataSession(t, "broken", tok)
	go func() {
		for {
			st, err := ds.AcceptStream()
			if err != nil {
				return
			}
			st.Write([]byte{0, 3, 'b', 'a', 'd'})
		}
	}()
	posted := make(chan int, 1)
	go func() { posted <- h.post(t, "broken", "ssh") }()
	req := recv(t, mq.reqs)
	if req.Mux {
		t.Errorf("request %+v: Mux set for a device with a data session", req)
	}
	mq.answer(t, req, wire.AnswerTargetRefused)
	if status := recv(t, posted); status != http.StatusOK {
		t.Errorf("POST: %d", status)
	}
	ans, _ := openStream(t, svc, wire.MuxOpen{DeviceID: "broken", Name: "ssh"})
	if ans.Status != http.StatusInternalServerError || ans.ErrorCode != "ServerError" {
		t.Errorf("answer %+v, want 500", ans)
	}
}

// TestMuxSessionsOff: with sessions off the paths are unknown, as on a
// hub without them: 404, which Tether's ends take for "no sessions".
func TestMuxSessionsOff(t *testing.T) {
	h := startMuxHub(t, func(c *node.Config) { c.NoSessions = true })
	tok := h.addDevice(t, "dev1")
	for _, r := range []struct{ path, token string }{
		{wire.PathMuxService, h.token},
		{wire.MuxDevicePath("dev1", ""), tok},
	} {
		if _, err := h.dial(t, r.path, r.token); !errors.Is(err, muxconn.ErrNoSession) {
			t.Errorf("%s: %v, want ErrNoSession", r.path, err)
		}
	}
	mq := h.connectMQTT(t, "dev1", tok, true)
	go h.post(t, "dev1", "ssh")
	req := recv(t, mq.reqs)
	if req.Mux {
		t.Errorf("request %+v: Mux set with sessions off", req)
	}
	mq.answer(t, req, wire.AnswerTargetRefused)
}

// TestMuxDrain: a drain tells every session to go away: no new stream
// opens on it, the stream open goes on until the hub closes, which cuts
// it with 1001; a new session is refused with 503.
func TestMuxDrain(t *testing.T) {
	h := startMuxHub(t, nil)
	h.sessionDevice(t, "dev1", accept)
	svc := h.serviceSession(t)
	ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "ssh"})
	if c == nil {
		t.Fatalf("answer %+v", ans)
	}
	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- h.srv.Drain(ctx, 0) }()
	// GoAway reached the service: its next stream does not open.
	deadline := time.Now().Add(muxWait)
	for {
		st, err := svc.OpenStream()
		if errors.Is(err, yamux.ErrRemoteGoAway) {
			break
		}
		if err == nil {
			st.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no GoAway: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := echo(c, []byte("while draining")); err != nil {
		t.Fatal(err)
	}
	_, err := h.dial(t, wire.PathMuxService, h.token)
	var herr *wsconn.HandshakeError
	if !errors.As(err, &herr) || herr.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a session while draining: %v, want 503", err)
	}
	cancel()
	<-drained
	if err := h.n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(muxWait))
	_, err = c.Read(make([]byte, 1))
	var cerr *wsconn.CloseError
	if !errors.As(err, &cerr) || cerr.Code != 1001 {
		t.Errorf("after the hub closed: %v, want close 1001", err)
	}
}

// TestMuxKeyWithdrawn: a service's session ends when the key that
// opened it is rotated, and its stream is closed with 1008; the device's
// data session ends when its own key is.
func TestMuxKeyWithdrawn(t *testing.T) {
	h := startMuxHub(t, nil)
	_, ds, _ := h.sessionDevice(t, "dev1", accept)
	svc, err := h.dial(t, wire.PathMuxService, h.policyToken(t, "service"))
	if err != nil {
		t.Fatal(err)
	}
	ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "ssh"})
	if c == nil {
		t.Fatalf("answer %+v", ans)
	}
	if err := echo(c, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.reg.RotatePolicyKey(t.Context(), "service", false); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(muxWait))
	_, err = c.Read(make([]byte, 1))
	var cerr *wsconn.CloseError
	if !errors.As(err, &cerr) || cerr.Code != 1008 {
		t.Errorf("stream after the key was rotated: %v, want close 1008", err)
	}
	select {
	case <-svc.CloseChan():
	case <-time.After(muxWait):
		t.Fatal("the service's session is still open")
	}

	d, err := h.reg.Get(t.Context(), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	d.Authentication.SymmetricKey.PrimaryKey = newKey()
	if _, _, err := h.reg.Put(t.Context(), d, "*"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ds.CloseChan():
	case <-time.After(muxWait):
		t.Fatal("the device's data session is still open")
	}
}

// TestMuxEarlyData: what a service writes behind its MuxOpen reaches the
// device right behind the MuxRequest, before the device answered; after a
// rejection it is gone (the next, accepted stream begins with its own),
// the rejected stream's record counts no bytes, and the accepted stream
// goes on as any.
func TestMuxEarlyData(t *testing.T) {
	h := startMuxHub(t, nil)
	tok := h.addDevice(t, "dev1")
	h.connectMQTT(t, "dev1", tok, true)
	ds := h.dataSession(t, "dev1", tok)
	type seen struct {
		req   wire.MuxRequest
		first []byte // the first frame behind the request, read before answering
	}
	got := make(chan seen, 2)
	go func() {
		for {
			st, err := ds.AcceptStream()
			if err != nil {
				return
			}
			st.SetReadDeadline(time.Now().Add(muxWait))
			var req wire.MuxRequest
			if err := wire.ReadMuxHeader(st, &req); err != nil {
				t.Errorf("device: %v", err)
				return
			}
			var hbuf [wsframe.MaxHeaderSize]byte
			var hd ws.Header
			if err := wsframe.ReadHeader(st, &hbuf, &hd); err != nil || hd.Masked || hd.OpCode != ws.OpBinary {
				t.Errorf("device: the frame behind the request: %+v, %v", hd, err)
				return
			}
			first := make([]byte, hd.Length)
			if _, err := io.ReadFull(st, first); err != nil {
				t.Errorf("device: %v", err)
				return
			}
			st.SetReadDeadline(time.Time{})
			got <- seen{req, first}
			status := http.StatusOK
			if req.Name == "no" {
				status = wire.AnswerTargetRefused
			}
			wire.WriteMuxHeader(st, wire.MuxAnswer{Status: status})
			if status != http.StatusOK {
				st.Close()
				continue
			}
			go func() {
				c := wsconn.OnSession(st)
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	svc := h.serviceSession(t)
	ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "no"}, []byte("secret early"))
	if c != nil || ans.DeviceStatus != wire.AnswerTargetRefused {
		t.Fatalf("answer %+v, want a rejection", ans)
	}
	if s := recv(t, got); s.req.Name != "no" || string(s.first) != "secret early" {
		t.Errorf("device saw %+v %q", s.req, s.first)
	}
	ans, c = openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "yes"}, []byte("hello"))
	if c == nil {
		t.Fatalf("answer %+v", ans)
	}
	if s := recv(t, got); s.req.StreamID != ans.StreamID || string(s.first) != "hello" {
		t.Errorf("device saw %+v %q", s.req, s.first)
	}
	if err := echo(c, []byte("more")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	recs := h.streamLogs(t, "dev1", 2)
	if r := recs[0]; r.Result != wire.ResultRejected || r.BytesToDevice != 0 || r.BytesToService != 0 {
		t.Errorf("rejected stream's record %+v", r)
	}
	if r := recs[1]; r.Result != wire.ResultAccepted || r.BytesToDevice != int64(len("hellomore")) || r.BytesToService != int64(len("more")) {
		t.Errorf("accepted stream's record %+v", r)
	}
}

// TestMuxDataSessionFollowsMQTT: a device's data session closes when its
// MQTT session on the node ends.
func TestMuxDataSessionFollowsMQTT(t *testing.T) {
	h := startMuxHub(t, nil)
	mq, ds, _ := h.sessionDevice(t, "dev1", accept)
	mq.c.Disconnect(0)
	select {
	case <-ds.CloseChan():
	case <-time.After(muxWait):
		t.Fatal("the data session outlived the MQTT session")
	}
}

// TestMuxDeviceChangedWithDataSession: a stream to a device with its data
// session open here is asked without reading the registry, yet a device
// disabled or deleted through this node is refused from the moment the
// change was answered, as the registry says, whatever its data session.
func TestMuxDeviceChangedWithDataSession(t *testing.T) {
	h := startMuxHub(t, nil)
	h.sessionDevice(t, "dev1", accept)
	svc := h.serviceSession(t)
	ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "echo"})
	if c == nil {
		t.Fatalf("answer %+v", ans)
	}
	if err := echo(c, []byte("on the data session")); err != nil {
		t.Fatal(err)
	}
	c.Close()

	d, err := h.reg.Get(t.Context(), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	d.Status = wire.StatusDisabled
	if status := h.rest(t, http.MethodPut, "/devices/dev1", d); status != http.StatusOK {
		t.Fatalf("disabling: %d", status)
	}
	ans, c = openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "echo"})
	if c != nil || ans.Status != http.StatusNotFound || ans.ErrorCode != "DeviceNotOnline" {
		t.Fatalf("stream to the disabled device: %+v", ans)
	}
	if status := h.rest(t, http.MethodDelete, "/devices/dev1", nil); status != http.StatusNoContent {
		t.Fatalf("deleting: %d", status)
	}
	ans, c = openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "echo"})
	if c != nil || ans.Status != http.StatusNotFound || ans.ErrorCode != "DeviceNotFound" {
		t.Fatalf("stream to the deleted device: %+v", ans)
	}
}
