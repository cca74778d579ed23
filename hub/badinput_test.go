package hub_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// logRecorder keeps every record a hub logs above debug, so that a test
// can show a request made it log nothing louder.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

// take returns the records kept since the last take.
func (l *logRecorder) take() []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs := l.recs
	l.recs = nil
	return recs
}

// recordHandler is the slog.Handler of a logRecorder. It is enabled at
// every level, so that debug calls run their arguments as they would with
// debug logging on.
type recordHandler struct{ l *logRecorder }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h recordHandler) WithGroup(string) slog.Handler            { return h }

func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level > slog.LevelDebug {
		h.l.mu.Lock()
		h.l.recs = append(h.l.recs, r.Clone())
		h.l.mu.Unlock()
	}
	return nil
}

// badInputHub is one hub node on loopback, run by hub/node as tetherd
// runs it, logging into a logRecorder.
type badInputHub struct {
	url    string // https://127.0.0.1:port
	client *http.Client
	token  string // a service token of iothubowner
	reg    *registry.Registry
	logs   *logRecorder
}

func startBadInputHub(t *testing.T) *badInputHub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logs := &logRecorder{}
	n, err := node.Start(ctx, node.Config{
		DataDir:   filepath.Join(t.TempDir(), "data"),
		HostNames: []string{"127.0.0.1"},
		Cluster:   cluster.Options{Name: "test"},
		// Failed logins are rows of the table, not an attack to back off from.
		Limits: hub.Limits{AuthFailures: -1, AuthFailureRatePerSource: -1},
		Logger: slog.New(recordHandler{logs}),
	})
	if err != nil {
		t.Fatal(err)
	}
	logs.take() // what the start made; the tests read what requests log
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: n.ClientTLS()}}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		if err := n.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	owner := n.Owner()
	token, err := sas.New("127.0.0.1", owner.PrimaryKey, owner.Name, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &badInputHub{url: "https://" + n.HTTPAddr().String(), client: client, token: token, reg: n.Registry(), logs: logs}
}

// TestMalformedIDsAndNames sends every REST route of the hub that takes a
// device id, a module id, a stream name or a certificate name each kind
// of malformed one: a character outside the allowed set, a "/" inside one
// path segment, non-ASCII or non-UTF-8 bytes, NUL, and one over its
// length. Each is the caller's mistake: 400 ArgumentInvalid, with a
// message that names what is wrong, and nothing logged above debug. A
// caller without a valid token gets 401 whatever the path holds, on every
// route. Rows at each limit's edge show that the checks refuse no valid
// id or name.
func TestMalformedIDsAndNames(t *testing.T) {
	h := startBadInputHub(t)
	if _, _, err := h.reg.Put(t.Context(), wire.Device{DeviceID: "dev1"}, ""); err != nil {
		t.Fatal(err)
	}

	const authFailed = "service authentication failed" // logged at info, as it always was
	type row struct {
		name         string
		method, path string
		noAuth       bool
		body         string
		status       int
		code         int    // 0: no Azure error body
		msg          string // in the error message
		logs         []string
	}
	long := func(n int, c string) string { return strings.Repeat(c, n) }
	var rows []row

	// The four forms of a stream request: POST (Azure's) and the
	// one-request WebSocket upgrade, for a device and for a module.
	type form struct {
		name, method, prefix string
		module               bool
	}
	forms := []form{
		{"POST device", http.MethodPost, "/twins/%s/streams/", false},
		{"POST module", http.MethodPost, "/twins/%s/modules/%s/streams/", true},
		{"GET device", http.MethodGet, "/twins/%s/streams/", false},
		{"GET module", http.MethodGet, "/twins/%s/modules/%s/streams/", true},
	}
	streamPath := func(f form, dev, module, name string) string {
		p := strings.Replace(f.prefix, "%s", dev, 1)
		if f.module {
			p = strings.Replace(p, "%s", module, 1)
		}
		return p + name
	}
	for _, f := range forms {
		add := func(what, dev, module, name string, status, code int, msg string) {
			r := row{name: f.name + ": " + what, method: f.method,
				path: streamPath(f, dev, module, name), status: status, code: code, msg: msg}
			if status == http.StatusNotFound {
				r.logs = []string{"stream"} // an invocation's record, as always
			}
			rows = append(rows, r)
		}
		add("device id with ;", "bad;id", "m1", "x", 400, wire.CodeBadRequest, "device id")
		add("device id with /", "bad%2Fid", "m1", "x", 400, wire.CodeBadRequest, "device id")
		add("device id with a space", "bad%20id", "m1", "x", 400, wire.CodeBadRequest, "device id")
		add("device id not ASCII", "d%C3%A9v", "m1", "x", 400, wire.CodeBadRequest, "device id")
		add("device id with NUL", "d%00v", "m1", "x", 400, wire.CodeBadRequest, "device id")
		add("device id of 129", long(129, "a"), "m1", "x", 400, wire.CodeBadRequest, "device id must be 1 to 128")
		add("device id of 128, unknown", long(128, "a"), "m1", "x", 404, wire.CodeDeviceNotFound, "not registered")
		add("stream name with +", "dev1", "m1", "a+b", 400, wire.CodeBadRequest, "invalid stream name")
		add("stream name with #", "dev1", "m1", "a%23b", 400, wire.CodeBadRequest, "invalid stream name")
		add("stream name with ?", "dev1", "m1", "a%3Fb", 400, wire.CodeBadRequest, "invalid stream name")
		add("stream name with /", "dev1", "m1", "a%2Fb", 400, wire.CodeBadRequest, "invalid stream name")
		add("stream name with NUL", "dev1", "m1", "a%00b", 400, wire.CodeBadRequest, "invalid stream name")
		add("stream name not UTF-8", "dev1", "m1", "a%FFb", 400, wire.CodeBadRequest, "not UTF-8")
		add("stream name ..", "dev1", "m1", "%2E%2E", 400, wire.CodeBadRequest, "dot segment")
		add("stream name .", "dev1", "m1", "%2E", 400, wire.CodeBadRequest, "dot segment")
		add("stream name of 1025", "dev1", "m1", long(wire.MaxStreamNameLen+1, "n"), 400, wire.CodeBadRequest, "1 to 1024 bytes")
		add("stream name of 1024", "dev1", "m1", long(wire.MaxStreamNameLen, "n"), 404, wire.CodeNotOnline, "not online")
		add("stream name not ASCII", "dev1", "m1", "%C3%A9cho", 404, wire.CodeNotOnline, "not online")
		add("stream name ...", "dev1", "m1", "...", 404, wire.CodeNotOnline, "not online")
		if f.module {
			add("module id with ;", "dev1", "bad;m", "x", 400, wire.CodeBadRequest, "module id")
			add("module id with /", "dev1", "bad%2Fm", "x", 400, wire.CodeBadRequest, "module id")
			add("module id not ASCII", "dev1", "m%C3%A9", "x", 400, wire.CodeBadRequest, "module id")
			add("module id of 129", "dev1", long(129, "m"), "x", 400, wire.CodeBadRequest, "module id must be 1 to 128")
			// Longer than a NATS subject may be: unchecked, it cost the
			// node its NATS connection.
			add("module id of 4000", "dev1", long(4000, "m"), "x", 400, wire.CodeBadRequest, "module id must be 1 to 128")
			add("module id of 128", "dev1", long(128, "m"), "x", 404, wire.CodeNotOnline, "not online")
		}
		rows = append(rows, row{name: f.name + ": no token, bad ids and name", method: f.method, noAuth: true,
			path: streamPath(f, "bad;id", "bad;m", "a+b"), status: 401, code: wire.CodeUnauthorized, logs: []string{authFailed}})
	}

	// The registry: devices and CA certificates.
	type mistake struct{ what, segment, msg string }
	for _, res := range []struct {
		kind, prefix, putBody string
		mistakes              []mistake
	}{
		{"device", "/devices/", "{}", []mistake{
			{"with ;", "bad;id", "device id"},
			{"with /", "bad%2Fid", "device id"},
			{"not ASCII", "d%C3%A9v", "device id"},
			{"with NUL", "d%00v", "device id"},
			{"of 129", long(129, "a"), "device id must be 1 to 128"},
		}},
		// Whatever the certificate, its name is refused.
		{"certificate", "/certificates/", `{"certificate": "-----BEGIN CERTIFICATE-----"}`, []mistake{
			{"with ;", "bad;ca", "certificate name"},
			{"with /", "bad%2Fca", "certificate name"},
			{"of 65", long(65, "c"), "certificate name must be 1 to 64"},
		}},
	} {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			body := ""
			if m == http.MethodPut {
				body = res.putBody
			}
			for _, c := range res.mistakes {
				rows = append(rows, row{name: m + " " + res.kind + ": " + c.what, method: m, path: res.prefix + c.segment, body: body,
					status: 400, code: wire.CodeBadRequest, msg: c.msg})
			}
			rows = append(rows, row{name: m + " " + res.kind + ": no token, " + res.mistakes[0].what, method: m,
				path: res.prefix + res.mistakes[0].segment, body: body,
				noAuth: true, status: 401, code: wire.CodeUnauthorized, logs: []string{authFailed}})
		}
	}

	// The listings that filter by device.
	for _, p := range []string{"/streamlogs", "/streams"} {
		for _, c := range []struct{ what, id, msg string }{
			{"with ;", "bad;id", "device id"},
			{"not ASCII", "dév", "device id"},
			{"with NUL", "d\x00v", "device id"},
			{"of 129", long(129, "a"), "device id must be 1 to 128"},
			// Unchecked, this one cost the node its NATS connection.
			{"of 4000", long(4000, "a"), "device id must be 1 to 128"},
		} {
			rows = append(rows, row{name: "GET " + p + ": deviceId " + c.what, method: http.MethodGet, path: p + "?deviceId=" + url.QueryEscape(c.id),
				status: 400, code: wire.CodeBadRequest, msg: c.msg})
		}
		rows = append(rows,
			row{name: "GET " + p + ": deviceId of 128", method: http.MethodGet, path: p + "?deviceId=" + long(128, "a"), status: 200},
			row{name: "GET " + p + ": no token, bad deviceId", method: http.MethodGet, path: p + "?deviceId=bad%3Bid",
				noAuth: true, status: 401, code: wire.CodeUnauthorized, logs: []string{authFailed}})
	}

	// The streaming endpoint: its token, not the path, says which stream;
	// ids that cannot have a stream are refused as any stranger is.
	rows = append(rows,
		row{name: "GET bridge: bad ids, no token", method: http.MethodGet, path: "/bridges/127.0.0.1/bad;id/a+b/x",
			noAuth: true, status: 401, code: wire.CodeUnauthorized},
		row{name: "GET bridge: over-long id, no token", method: http.MethodGet, path: "/bridges/127.0.0.1/" + long(129, "a") + "/x/x",
			noAuth: true, status: 401, code: wire.CodeUnauthorized},
		row{name: "GET bridge: not a bridge path", method: http.MethodGet, path: "/bridges/127.0.0.1/dev1/x",
			noAuth: true, status: 400, code: wire.CodeBadRequest, msg: "not a streaming endpoint path"},
	)

	// After all of it the hub still serves: the mistakes cost it nothing.
	rows = append(rows, row{name: "GET device dev1 at the end", method: http.MethodGet, path: "/devices/dev1", status: 200})

	for _, r := range rows {
		var body io.Reader
		if r.body != "" {
			body = strings.NewReader(r.body)
		}
		req, err := http.NewRequestWithContext(t.Context(), r.method, h.url+r.path, body)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if !r.noAuth {
			req.Header.Set("Authorization", h.token)
		}
		if r.method == http.MethodGet && (strings.HasPrefix(r.path, "/twins/") || strings.HasPrefix(r.path, "/bridges/")) {
			// The upgrade of the one-request opening, and of a side joining.
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		}
		res, err := h.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("%s: reading the answer: %v", r.name, err)
		}
		if res.StatusCode != r.status {
			t.Errorf("%s: status %d, want %d (%.200s)", r.name, res.StatusCode, r.status, got)
		}
		wantHeader := ""
		if r.code != 0 {
			wantHeader = wire.CodeName(r.code)
		}
		if hv := res.Header.Get(wire.HeaderErrorCode); hv != wantHeader {
			t.Errorf("%s: %s %q, want %q", r.name, wire.HeaderErrorCode, hv, wantHeader)
		}
		if r.code != 0 {
			code, msg := wire.DecodeError(got)
			if code != r.code || !strings.Contains(msg, r.msg) {
				t.Errorf("%s: body says %d %.200q, want %d and a message with %q", r.name, code, msg, r.code, r.msg)
			}
		}
		for _, rec := range h.logs.take() {
			if !slices.Contains(r.logs, rec.Message) {
				t.Errorf("%s: logged at %s: %q", r.name, rec.Level, rec.Message)
			}
		}
	}
}
