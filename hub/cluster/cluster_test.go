package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/tether-io/tether/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tLogWriter struct{ t *testing.T }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestStartClose(t *testing.T) {
	ctx := ctxTimeout(t, 30*time.Second)
	dir := t.TempDir()
	c, err := Start(ctx, Options{DataDir: dir, Name: "a.b c", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^a-b-c-[0-9a-f]{8}$`).MatchString(c.Node()) {
		t.Errorf("Node() = %q, want a-b-c-<hex>", c.Node())
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "nats")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store folder: %v, %v; want mode 0700", fi, err)
	}
	if !c.Conn().IsConnected() {
		t.Fatal("Conn not connected")
	}
	if _, err := c.JetStream().AccountInfo(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Ready(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ready after Close = %v, want ErrClosed", err)
	}
}

func TestNodeUnique(t *testing.T) {
	ctx := ctxTimeout(t, 30*time.Second)
	a, err := Start(ctx, Options{DataDir: t.TempDir(), Name: "same"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Start(ctx, Options{DataDir: t.TempDir(), Name: "same"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Node() == b.Node() {
		t.Fatalf("two nodes share the id %q", a.Node())
	}
}

func TestDefaultName(t *testing.T) {
	ctx := ctxTimeout(t, 30*time.Second)
	c, err := Start(ctx, Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+-[0-9a-f]{8}$`).MatchString(c.Node()) {
		t.Fatalf("Node() = %q is not one subject token with a suffix", c.Node())
	}
}

func TestRestartKeepsData(t *testing.T) {
	ctx := ctxTimeout(t, 30*time.Second)
	dir := t.TempDir()
	c, err := Start(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := c.JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = Start(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kv, err = c.JetStream().KeyValue(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Value()) != "v1" {
		t.Fatalf("after restart k = %q, want v1", e.Value())
	}
}

func TestEmbeddedNeedsDataDir(t *testing.T) {
	_, err := Start(ctxTimeout(t, 5*time.Second), Options{})
	if err == nil || !strings.Contains(err.Error(), "DataDir") {
		t.Fatalf("Start without DataDir: %v", err)
	}
}

func TestDataDirUnusable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(ctxTimeout(t, 5*time.Second), Options{DataDir: file})
	if err == nil || !strings.Contains(err.Error(), "store folder") {
		t.Fatalf("Start on a file as DataDir: %v", err)
	}
}

// runServer runs a NATS server with a loopback listener, standing in for
// an external NATS system.
func runServer(t *testing.T, jetStream bool) *server.Server {
	t.Helper()
	return natstest.Run(t, &server.Options{JetStream: jetStream})
}

func TestExternal(t *testing.T) {
	s := runServer(t, true)
	ctx := ctxTimeout(t, 30*time.Second)
	c, err := Start(ctx, Options{URL: s.ClientURL(), Name: "ext", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(); err != nil {
		t.Fatal(err)
	}
	if got := c.Conn().ConnectedUrl(); got != s.ClientURL() {
		t.Errorf("connected to %q, want %q", got, s.ClientURL())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestExternalWithoutJetStream(t *testing.T) {
	s := runServer(t, false)
	_, err := Start(ctxTimeout(t, 500*time.Millisecond), Options{URL: s.ClientURL()})
	if err == nil {
		t.Fatal("Start succeeded on a server without JetStream")
	}
	if !errors.Is(err, jetstream.ErrJetStreamNotEnabled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %q does not say JetStream is not enabled and the wait ended", err)
	}
}

func TestExternalUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "nats://tether:s3cret@" + addr
	_, err = Start(ctxTimeout(t, 300*time.Millisecond), Options{URL: url})
	if err == nil {
		t.Fatal("Start succeeded with nothing listening")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error leaks the password: %v", err)
	}
	if !strings.Contains(err.Error(), addr) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %q does not name %s and the end of the wait", err, addr)
	}
}

func TestStartCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Start(ctx, Options{DataDir: t.TempDir()})
	if err == nil {
		t.Fatal("Start succeeded with a canceled context")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://h:4222":                    "nats://h:4222",
		"nats://u:p@h:4222":                "nats://u:xxxxx@h:4222",
		"nats://tok@h:4222, nats://u:p@h2": "nats://redacted@h:4222,nats://u:xxxxx@h2",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestExternalTLS: an external NATS that requires TLS and a client
// certificate, with its own CA. With ClientTLS the node connects; without
// its CA, or without a client certificate, Start fails and says why.
func TestExternalTLS(t *testing.T) {
	pki := newRoutePKI(t)
	srvCert, srvKey, caFile := pki.node(t, "nats-server")
	cliCert, cliKey, _ := pki.node(t, "tetherd")
	cert, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	serverTLS.ClientCAs, err = loadPool(caFile, "CA")
	if err != nil {
		t.Fatal(err)
	}
	s := natstest.Run(t, &server.Options{
		JetStream: true, TLS: true, TLSVerify: true, TLSConfig: serverTLS, TLSTimeout: 2,
	})
	url := "tls://" + s.Addr().String()

	conf, err := ClientTLS(caFile, cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctxTimeout(t, 30*time.Second), Options{URL: url, Name: "ext-tls", NATSTLS: conf, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Start with the NATS CA and a client certificate: %v", err)
	}
	if err := c.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	noCert, err := ClientTLS(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		conf *tls.Config
		want string
	}{
		{"system roots only", nil, "unknown authority"},
		// The server's alert races the client's first write: the reason
		// reads "certificate required" or "closed by remote after TLS
		// handshake".
		{"no client certificate", noCert, "tls"},
	} {
		_, err := Start(ctxTimeout(t, 500*time.Millisecond), Options{URL: url, NATSTLS: tc.conf})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Start: %v, want an error saying %q", tc.name, err, tc.want)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
	}

	if _, err := ClientTLS(caFile, cliCert, ""); err == nil {
		t.Error("ClientTLS took a certificate without its key")
	}
	if _, err := ClientTLS(filepath.Join(t.TempDir(), "none.pem"), "", ""); err == nil || !strings.Contains(err.Error(), "NATS CA") {
		t.Errorf("ClientTLS with a missing CA file: %v", err)
	}
}
