package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

const (
	policyKey = "c2VydmljZS1rZXktZm9yLXRlc3RzLTAxMjM0NTY3ODk=" // any base64
	devKey    = "ZGV2aWNlLWtleS1wcmltYXJ5LTAxMjM0NTY3ODlhYmM="
)

// azureDevice is a device document exactly as Azure's registry returns it,
// nulls included.
const azureDevice = `{"deviceId":%q,"generationId":"638412345678901234","etag":"MA==",` +
	`"connectionState":"Disconnected","status":"enabled","statusReason":null,` +
	`"connectionStateUpdatedTime":"0001-01-01T00:00:00Z","statusUpdatedTime":"0001-01-01T00:00:00Z",` +
	`"lastActivityTime":"0001-01-01T00:00:00Z","cloudToDeviceMessageCount":0,` +
	`"authentication":{"symmetricKey":{"primaryKey":"` + devKey + `","secondaryKey":"` + devKey + `"},` +
	`"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"},` +
	`"capabilities":{"iotEdge":false}}`

// fakeHub is a TLS server answering in Azure's shapes; each test sets the
// handler it needs. Its session path answers as Azure's hub does, 404,
// unless a test sets mux; those requests are counted apart.
type fakeHub struct {
	srv      *httptest.Server
	host     string // HostName of the connection string: 127.0.0.1:port
	mu       sync.Mutex
	h        http.HandlerFunc
	mux      http.HandlerFunc
	muxDials int
	reqs     []*http.Request
	body     [][]byte
	conn     int // connections accepted
}

func newFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	f := &fakeHub{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.PathMuxService {
			f.mu.Lock()
			f.muxDials++
			mux := f.mux
			f.mu.Unlock()
			if mux == nil {
				mux = http.NotFound
			}
			mux(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, r)
		f.body = append(f.body, b)
		h := f.h
		f.mu.Unlock()
		h(w, r)
	}))
	// Untrusted-certificate tests make the server log handshake errors.
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.mu.Lock()
			f.conn++
			f.mu.Unlock()
		}
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.host = f.srv.Listener.Addr().String()
	return f
}

func (f *fakeHub) handle(h http.HandlerFunc) {
	f.mu.Lock()
	f.h = h
	f.mu.Unlock()
}

// sessionDials counts the requests of the session path.
func (f *fakeHub) sessionDials() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.muxDials
}

func (f *fakeHub) last(t *testing.T) (*http.Request, []byte) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("the hub got no request")
	}
	return f.reqs[len(f.reqs)-1], f.body[len(f.body)-1]
}

func (f *fakeHub) connStr() string {
	return "HostName=" + f.host + ";SharedAccessKeyName=service;SharedAccessKey=" + policyKey
}

func (f *fakeHub) trust() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(f.srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

func (f *fakeHub) client(t *testing.T, opts Options) *Client {
	t.Helper()
	if opts.TLSConfig == nil {
		opts.TLSConfig = f.trust()
	}
	c, err := New(f.connStr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func azureError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set(wire.HeaderErrorCode, wire.CodeName(code))
	w.WriteHeader(status)
	w.Write(wire.EncodeError(code, msg))
}

// checkAuth verifies the request's token the way the hub does.
func checkAuth(t *testing.T, r *http.Request, host string) {
	t.Helper()
	checkToken(t, r.Header.Get("Authorization"), host)
	if v := r.URL.Query().Get("api-version"); v != wire.APIVersion {
		t.Errorf("api-version = %q", v)
	}
}

// checkToken verifies a policy's token the way the hub does.
func checkToken(t *testing.T, auth, host string) {
	t.Helper()
	tok, err := sas.ParseToken(auth)
	if err != nil {
		t.Fatalf("Authorization: %v", err)
	}
	if err := tok.Verify(policyKey, time.Now()); err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if tok.Resource != host || tok.KeyName != "service" {
		t.Errorf("token sr=%q skn=%q, want sr=%q skn=service", tok.Resource, tok.KeyName, host)
	}
	if d := time.Until(tok.Expiry); d < 50*time.Minute || d > 61*time.Minute {
		t.Errorf("token lives %v, want the default hour", d)
	}
}

func TestNew(t *testing.T) {
	for _, s := range []string{
		"",
		"HostName=h;SharedAccessKey=" + policyKey,
		"HostName=h;DeviceId=d;SharedAccessKey=" + devKey,
		"HostName=h;SharedAccessKeyName=p;SharedAccessKey=not*base64",
	} {
		if _, err := New(s, Options{}); !errors.Is(err, sas.ErrConnectionString) {
			t.Errorf("New(%q) = %v, want ErrConnectionString", s, err)
		}
	}
	_, err := New("HostName=h;DeviceId=d;SharedAccessKey="+devKey, Options{})
	if !strings.Contains(err.Error(), "device") || !strings.Contains(err.Error(), "SharedAccessKeyName") {
		t.Errorf("device string error %q does not say what is wrong", err)
	}
	c, err := New("HostName=hub.example.com;SharedAccessKeyName=service;SharedAccessKey="+policyKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.HostName() != "hub.example.com" || c.base != "https://hub.example.com:443" {
		t.Errorf("HostName %q base %q", c.HostName(), c.base)
	}
	if c.opts.ConnectTimeout != 60*time.Second || c.opts.ResponseTimeout != 60*time.Second || c.opts.TokenTTL != time.Hour {
		t.Errorf("defaults: %+v", c.opts)
	}
}

func TestRegistryRequests(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	ctx := context.Background()
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		switch {
		case r.URL.Path == "/devicestreams":
			fmt.Fprintf(w, `{"streamingEndpoints":["https://%s"]}`, f.host)
		case r.URL.Path == "/devices":
			fmt.Fprintf(w, "[%s,%s]", fmt.Sprintf(azureDevice, "a"), fmt.Sprintf(azureDevice, "b"))
		case r.Method == "DELETE":
			w.WriteHeader(http.StatusNoContent)
		default:
			fmt.Fprintf(w, azureDevice, strings.TrimPrefix(r.URL.Path, "/devices/"))
		}
	})

	id := "dev 1/ä?#%"
	escaped := "/devices/dev%201%2F%C3%A4%3F%23%25"

	d, err := c.CreateDevice(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	r, body := f.last(t)
	checkAuth(t, r, f.host)
	if r.Method != "PUT" || r.URL.EscapedPath() != escaped {
		t.Errorf("create: %s %s, want PUT %s", r.Method, r.URL.EscapedPath(), escaped)
	}
	if r.Header.Get("If-Match") != "" || r.Header.Get("If-None-Match") != "" {
		t.Errorf("create sent an etag condition: %v", r.Header)
	}
	var sent map[string]any
	if err := json.Unmarshal(body, &sent); err != nil || sent["deviceId"] != id {
		t.Errorf("create body %s (%v)", body, err)
	}
	if strings.Contains(string(body), "primaryKey") {
		t.Errorf("create body %s carries keys; the hub must generate them", body)
	}
	if d.DeviceID != id || d.Authentication.SymmetricKey == nil || d.Authentication.SymmetricKey.PrimaryKey != devKey || d.Status != "enabled" {
		t.Errorf("create returned %+v", d)
	}

	if _, err := c.GetDevice(ctx, id); err != nil {
		t.Fatal(err)
	}
	r, _ = f.last(t)
	checkAuth(t, r, f.host)
	if r.Method != "GET" || r.URL.EscapedPath() != escaped {
		t.Errorf("get: %s %s", r.Method, r.URL.EscapedPath())
	}

	ds, err := c.ListDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ = f.last(t)
	checkAuth(t, r, f.host)
	if r.Method != "GET" || r.URL.Path != "/devices" || r.URL.Query().Get("top") == "" {
		t.Errorf("list: %s %s", r.Method, r.URL)
	}
	if len(ds) != 2 || ds[0].DeviceID != "a" || ds[1].DeviceID != "b" {
		t.Errorf("list returned %+v", ds)
	}

	if err := c.DeleteDevice(ctx, id); err != nil {
		t.Fatal(err)
	}
	r, _ = f.last(t)
	checkAuth(t, r, f.host)
	if r.Method != "DELETE" || r.URL.EscapedPath() != escaped || r.Header.Get("If-Match") != "*" {
		t.Errorf("delete: %s %s If-Match %q", r.Method, r.URL.EscapedPath(), r.Header.Get("If-Match"))
	}

	eps, err := c.StreamingEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ = f.last(t)
	checkAuth(t, r, f.host)
	if r.Method != "GET" || len(eps) != 1 || eps[0] != "https://"+f.host {
		t.Errorf("endpoints: %s %s → %v", r.Method, r.URL, eps)
	}

	f.mu.Lock()
	n := f.conn
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("%d connections for 5 calls, want 1 kept alive", n)
	}
}

func TestListDevicesEmpty(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	f.handle(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "[]") })
	ds, err := c.ListDevices(context.Background())
	if err != nil || ds == nil || len(ds) != 0 {
		t.Errorf("ListDevices = %#v, %v; want an empty non-nil slice", ds, err)
	}
}

func TestOpenStreamRequest(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{ConnectTimeout: 1500 * time.Millisecond, ResponseTimeout: 30 * time.Second})
	streamURL := "wss://" + f.host + "/bridges/hub/dev%201/ssh/abc"
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.HeaderIsAccepted, "True")
		w.Header().Set(wire.HeaderURL, streamURL)
		w.Header().Set(wire.HeaderAuthToken, "service-side-token")
	})
	type dialed struct {
		url, token string
		conf       *tls.Config
	}
	got := make(chan dialed, 1)
	stubDial(t, func(_ context.Context, u, tok string, conf *tls.Config) (net.Conn, error) {
		got <- dialed{u, tok, conf}
		a, b := net.Pipe()
		t.Cleanup(func() { b.Close() })
		return a, nil
	})

	conn, err := c.OpenStream(context.Background(), "dev 1/x", "ssh")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	r, body := f.last(t)
	checkAuth(t, r, f.host)
	if want := "/twins/dev%201%2Fx/streams/ssh"; r.Method != "POST" || r.URL.EscapedPath() != want {
		t.Errorf("%s %s, want POST %s", r.Method, r.URL.EscapedPath(), want)
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) != 0 || len(body) != 0 {
		t.Errorf("body: length %d, encoding %v", r.ContentLength, r.TransferEncoding)
	}
	if v := r.Header.Get(wire.HeaderConnectTimeout); v != "1.5" {
		t.Errorf("%s = %q, want 1.5", wire.HeaderConnectTimeout, v)
	}
	if v := r.Header.Get(wire.HeaderResponseTimeout); v != "30" {
		t.Errorf("%s = %q, want 30", wire.HeaderResponseTimeout, v)
	}
	d := <-got
	if d.url != streamURL || d.token != "service-side-token" {
		t.Errorf("dialed %q with %q", d.url, d.token)
	}
	if d.conf == nil || !d.conf.RootCAs.Equal(f.trust().RootCAs) {
		t.Error("the streaming endpoint was not dialed with the client's TLS config")
	}
}

func TestOpenStreamDefaultTimeoutHeaders(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	f.handle(func(w http.ResponseWriter, r *http.Request) { w.Header().Set(wire.HeaderIsAccepted, "False") })
	c.OpenStream(context.Background(), "d", "s")
	r, _ := f.last(t)
	if r.Header.Get(wire.HeaderConnectTimeout) != "60" || r.Header.Get(wire.HeaderResponseTimeout) != "60" {
		t.Errorf("timeout headers %v", r.Header)
	}
}

func stubDial(t *testing.T, f func(context.Context, string, string, *tls.Config) (net.Conn, error)) {
	old := dial
	dial = f
	t.Cleanup(func() { dial = old })
}

func TestOpenStreamRejected(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.HeaderIsAccepted, "False")
	})
	stubDial(t, func(context.Context, string, string, *tls.Config) (net.Conn, error) {
		t.Error("dialed after a rejection")
		return nil, errors.New("no")
	})
	_, err := c.OpenStream(context.Background(), "dev1", "ssh")
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("err = %v, want ErrRejected", err)
	}
	if !strings.Contains(err.Error(), `"dev1"`) || !strings.Contains(err.Error(), `"ssh"`) {
		t.Errorf("error %q does not name the device and stream", err)
	}
}

func TestOpenStreamAcceptedWithoutURL(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	f.handle(func(w http.ResponseWriter, r *http.Request) { w.Header().Set(wire.HeaderIsAccepted, "True") })
	if _, err := c.OpenStream(context.Background(), "dev1", "ssh"); err == nil || !strings.Contains(err.Error(), wire.HeaderURL) {
		t.Errorf("err = %v", err)
	}
}

func TestOpenStreamBadName(t *testing.T) {
	c, err := New("HostName=127.0.0.1:1;SharedAccessKeyName=service;SharedAccessKey="+policyKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "a/b", "a?b"} {
		if _, err := c.OpenStream(context.Background(), "d", name); err == nil {
			t.Errorf("stream name %q accepted", name)
		}
	}
	if _, err := c.OpenStream(context.Background(), "", "ssh"); err == nil {
		t.Error("empty device ID accepted")
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		code       int  // 0: no Azure body
		headerOnly bool // the code comes only in iothub-errorcode
		want       error
	}{
		{"unauthorized", 401, wire.CodeUnauthorized, false, ErrUnauthorized},
		{"unauthorized no code", 401, 0, false, ErrUnauthorized},
		{"not found", 404, wire.CodeDeviceNotFound, false, ErrDeviceNotFound},
		{"not found header", 404, wire.CodeDeviceNotFound, true, ErrDeviceNotFound},
		{"offline", 404, wire.CodeNotOnline, false, ErrDeviceOffline},
		{"offline header", 404, wire.CodeNotOnline, true, ErrDeviceOffline},
		{"timeout", 504, wire.CodeGatewayTimeout, false, ErrTimeout},
		{"throttled", 429, wire.CodeThrottled, false, ErrThrottled},
		{"throttled no code", 429, 0, false, ErrThrottled},
		{"exists", 409, wire.CodeConflict, false, ErrDeviceExists},
		{"exists no code", 409, 0, false, ErrDeviceExists},
		{"precondition", 412, wire.CodePrecondition, false, ErrPrecondition},
		{"server error", 500, wire.CodeServerError, false, nil},
		{"bad request", 400, wire.CodeBadRequest, false, nil},
	}
	sentinels := []error{ErrDeviceNotFound, ErrDeviceOffline, ErrRejected, ErrTimeout, ErrUnauthorized, ErrThrottled, ErrDeviceExists, ErrPrecondition}
	f := newFakeHub(t)
	c := f.client(t, Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.handle(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case tc.code == 0:
					http.Error(w, "plain text from a proxy", tc.status)
				case tc.headerOnly:
					w.Header().Set(wire.HeaderErrorCode, wire.CodeName(tc.code))
					w.WriteHeader(tc.status)
				default:
					azureError(w, tc.status, tc.code, "the hub's message")
				}
			})
			calls := map[string]func() error{
				"OpenStream": func() error { _, err := c.OpenStream(context.Background(), "dev1", "ssh"); return err },
				"GetDevice":  func() error { _, err := c.GetDevice(context.Background(), "dev1"); return err },
				"Create":     func() error { _, err := c.CreateDevice(context.Background(), "dev1"); return err },
				"Delete":     func() error { return c.DeleteDevice(context.Background(), "dev1") },
				"List":       func() error { _, err := c.ListDevices(context.Background()); return err },
				"Endpoints":  func() error { _, err := c.StreamingEndpoints(context.Background()); return err },
			}
			for name, call := range calls {
				err := call()
				var ae *APIError
				if !errors.As(err, &ae) {
					t.Fatalf("%s: err = %v (%T), want an *APIError", name, err, err)
				}
				if ae.StatusCode != tc.status || ae.Code != tc.code {
					t.Errorf("%s: APIError %+v, want status %d code %d", name, ae, tc.status, tc.code)
				}
				if tc.code != 0 && !tc.headerOnly && ae.Message != "the hub's message" {
					t.Errorf("%s: message %q", name, ae.Message)
				}
				for _, s := range sentinels {
					if errors.Is(err, s) != (s == tc.want) {
						t.Errorf("%s: errors.Is(%v, %v) = %v", name, err, s, !(s == tc.want))
					}
				}
			}
		})
	}
}

func TestAPIErrorText(t *testing.T) {
	e := &APIError{StatusCode: 404, Code: wire.CodeNotOnline, Message: "Device dev1 is not online."}
	if want := "hub answered 404 (404103 DeviceNotOnline): Device dev1 is not online."; e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
}

func TestDeviceConnectionString(t *testing.T) {
	c, err := New("HostName=127.0.0.1:18443;SharedAccessKeyName=iothubowner;SharedAccessKey="+policyKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &wire.Device{DeviceID: "dev1", Authentication: wire.Authentication{Type: "sas", SymmetricKey: &wire.SymmetricKey{PrimaryKey: devKey, SecondaryKey: policyKey}}}
	s := c.DeviceConnectionString(d)
	if want := "HostName=127.0.0.1:18443;DeviceId=dev1;SharedAccessKey=" + devKey; s != want {
		t.Errorf("got  %q\nwant %q", s, want)
	}
	cs, err := sas.ParseConnectionString(s)
	if err != nil || !cs.IsDevice() {
		t.Errorf("does not parse back as a device string: %v", err)
	}
	if s := c.DeviceConnectionString(&wire.Device{DeviceID: "x"}); s != "" {
		t.Errorf("device without keys gave %q", s)
	}
	if s := c.DeviceConnectionString(nil); s != "" {
		t.Errorf("nil device gave %q", s)
	}
}

func TestUntrustedCertificate(t *testing.T) {
	f := newFakeHub(t)
	f.handle(func(w http.ResponseWriter, r *http.Request) { t.Error("request passed an untrusted certificate") })
	c := f.client(t, Options{TLSConfig: &tls.Config{}}) // system roots only
	_, err := c.GetDevice(context.Background(), "dev1")
	if err == nil {
		t.Fatal("no error")
	}
	t.Log(err)
	for _, want := range []string{"connecting to hub " + f.host, "certificate not trusted", "Options.TLSConfig.RootCAs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		t.Errorf("the TLS error is not in the chain: %v", err)
	}
}

func TestUntrustedStreamingEndpoint(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.HeaderIsAccepted, "True")
		w.Header().Set(wire.HeaderURL, "wss://other.example:443/bridges/h/d/s/1?secret=x")
		w.Header().Set(wire.HeaderAuthToken, "tok")
	})
	stubDial(t, func(context.Context, string, string, *tls.Config) (net.Conn, error) {
		return nil, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	})
	_, err := c.OpenStream(context.Background(), "d", "s")
	if err == nil || !strings.Contains(err.Error(), "certificate not trusted") || !strings.Contains(err.Error(), "other.example:443") {
		t.Errorf("err = %v", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error %q shows the streaming URL's query", err)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := New("HostName="+addr+";SharedAccessKeyName=service;SharedAccessKey="+policyKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.OpenStream(context.Background(), "dev1", "ssh")
	if err == nil || !strings.Contains(err.Error(), "connecting to hub "+addr+": ") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
	if strings.Contains(err.Error(), "https://") {
		t.Errorf("error %q repeats the request URL", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Errorf("the dial error is not in the chain: %v", err)
	}
}

func TestOpenStreamCanceled(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	arrived := make(chan struct{})
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.OpenStream(ctx, "dev1", "ssh"); errc <- err }()
	<-arrived
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// TestOpenStreamJoins goes through the real wsconn.Dial to a streaming
// endpoint that echoes, as a hub does once the device has joined.
func TestOpenStreamJoins(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, wire.PathBridges) {
			if r.Header.Get("Authorization") != "Bearer tok-123" {
				http.Error(w, "bad token", http.StatusUnauthorized)
				return
			}
			conn, _, _, err := ws.UpgradeHTTP(r, w)
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				for {
					msg, op, err := wsutil.ReadClientData(conn)
					if err != nil {
						return
					}
					if wsutil.WriteServerMessage(conn, op, msg) != nil {
						return
					}
				}
			}()
			return
		}
		w.Header().Set(wire.HeaderIsAccepted, "True")
		w.Header().Set(wire.HeaderURL, "wss://"+f.host+"/bridges/hub/dev1/echo/1")
		w.Header().Set(wire.HeaderAuthToken, "tok-123")
	})
	conn, err := c.OpenStream(context.Background(), "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		t.Errorf("read %q, %v", buf, err)
	}
}

// A hub without the one-request opening (Azure's) answers its upgrade as
// any unknown request; the client then POSTs, and POSTs from then on.
func TestOpenStreamFallsBackToPOST(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	var gets, posts atomic.Int32
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			gets.Add(1)
			http.NotFound(w, r)
		case http.MethodPost:
			posts.Add(1)
			w.Header().Set(wire.HeaderIsAccepted, "False")
		}
	})
	for range 2 {
		if _, err := c.OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, ErrRejected) {
			t.Fatalf("OpenStream = %v, want ErrRejected from the POST", err)
		}
	}
	if g, p := gets.Load(), posts.Load(); g != 1 || p != 2 {
		t.Errorf("%d upgrades and %d POSTs, want 1 and 2", g, p)
	}
}
