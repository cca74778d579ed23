package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/streamlog"
	"github.com/tether-io/tether/internal/natstest"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
)

// TestMain fails the tests when a goroutine outlives them: Shutdown waits
// for every one its node started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestCheckDataDir(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "a", "data")
	if err := checkDataDir(fresh); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(fresh); st.Mode().Perm() != 0o700 {
		t.Fatalf("new data folder mode %04o", st.Mode().Perm())
	}
	if err := checkDataDir(fresh); err != nil {
		t.Fatalf("second start: %v", err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o755)
	err := checkDataDir(open)
	if err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("a folder others can read: %v", err)
	}
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if err := checkDataDir(file); err == nil {
		t.Fatal("a file accepted as data folder")
	}
}

// dataDir is a data folder for a node, not there yet: Start makes it
// 0700, where t.TempDir's mode is the umask's.
func dataDir(t *testing.T) string {
	return filepath.Join(t.TempDir(), "data")
}

// listen binds a loopback listener on a free port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// start starts a node and shuts it down when the test ends.
func start(t *testing.T, cfg Config) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n
}

// TestZeroConfig: a Config with only DataDir serves HTTPS on loopback
// with a certificate from the data folder's own CA, which ClientTLS
// trusts, and writes the owner connection string, which opens the hub.
func TestZeroConfig(t *testing.T) {
	dir := dataDir(t)
	n := start(t, Config{DataDir: dir})
	_, port, _ := net.SplitHostPort(n.HTTPAddr().String())
	if got, want := n.PublicURL(), "https://localhost:"+port; got != want {
		t.Errorf("public URL %s, want %s", got, want)
	}
	if n.MQTTAddr() != nil || n.MetricsAddr() != nil {
		t.Errorf("listeners not asked for: MQTT %v, metrics %v", n.MQTTAddr(), n.MetricsAddr())
	}
	file, err := os.ReadFile(filepath.Join(dir, OwnerFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != n.OwnerConnectionString()+"\n" {
		t.Errorf("%s holds %q, want %q", OwnerFile, file, n.OwnerConnectionString()+"\n")
	}
	cs, err := sas.ParseConnectionString(n.OwnerConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	if cs.HostName != "localhost:"+port || cs.SharedAccessKeyName != n.Owner().Name || cs.SharedAccessKey != n.Owner().PrimaryKey {
		t.Errorf("owner connection string %+v, want localhost:%s and the policy %s", cs, port, n.Owner().Name)
	}
	svc, err := service.New(n.OwnerConnectionString(), service.Options{TLSConfig: n.ClientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateDevice(t.Context(), "dev1"); err != nil {
		t.Fatalf("the owner connection string and ClientTLS: %v", err)
	}
	if _, err := n.Registry().Get(t.Context(), "dev1"); err != nil {
		t.Errorf("the device the service created, read from Registry: %v", err)
	}
}

// TestStartFailsClean: a data folder that other users may read is
// refused with the fix, and the listeners Start was given are closed.
func TestStartFailsClean(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	httpLn, mqttLn := listen(t), listen(t)
	_, err := Start(t.Context(), Config{DataDir: dir, HTTP: httpLn, MQTT: mqttLn})
	if err == nil || !strings.Contains(err.Error(), "chmod 700 "+dir) {
		t.Fatalf("Start on a folder open to others: %v, want the chmod that fixes it", err)
	}
	for _, ln := range []net.Listener{httpLn, mqttLn} {
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener %v after a failed start: %v, want it closed", ln.Addr(), err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("a refused data folder was written to: %d entries", len(entries))
	}
	if _, err := Start(t.Context(), Config{}); err == nil || !strings.Contains(err.Error(), "DataDir") {
		t.Errorf("Start without DataDir: %v", err)
	}
}

// streamPair is a stream open through n: the service's side and the
// device's side, which echoes.
type streamPair struct {
	svc    net.Conn
	devEnd chan error // the device side's read error when the stream ends
}

// connectAndOpen registers dev1, connects it over MQTT, and opens one
// stream to it that the device echoes.
func connectAndOpen(t *testing.T, n *Node) (*service.Client, *device.Client, streamPair) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	svc, err := service.New(n.OwnerConnectionString(), service.Options{TLSConfig: n.ClientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.CreateDevice(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	dc, err := device.Dial(ctx, svc.DeviceConnectionString(d), device.Options{TLSConfig: n.ClientTLS(), Transport: device.TLS, MQTTAddress: n.MQTTAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	p := streamPair{devEnd: make(chan error, 1)}
	go func() {
		req, err := dc.Accept(context.Background())
		if err != nil {
			p.devEnd <- err
			return
		}
		conn, err := req.Accept(context.Background())
		if err != nil {
			p.devEnd <- err
			return
		}
		defer conn.Close()
		_, err = io.Copy(conn, conn)
		p.devEnd <- err // nil: the service's clean end (io.EOF)
	}()
	if p.svc, err = svc.OpenStream(ctx, "dev1", "echo"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.svc.Close() })
	echo(t, p.svc, "before")
	return svc, dc, p
}

// logWatch is a slog.Handler that closes seen once msg is logged: the
// event a test waits on when a state change has no other.
type logWatch struct {
	msg  string
	seen chan struct{}
	once sync.Once
}

func newLogWatch(msg string) *logWatch { return &logWatch{msg: msg, seen: make(chan struct{})} }

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWatch) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *logWatch) WithGroup(string) slog.Handler            { return w }

func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	if r.Message == w.msg {
		w.once.Do(func() { close(w.seen) })
	}
	return nil
}

// echo writes msg on c and reads it back.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil || string(back) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, back, err)
	}
}

// TestShutdownDrains: Shutdown drains as tetherd does on SIGTERM. While
// it drains, a new stream is refused with 503 and the open one carries
// bytes on; once that one ends cleanly, Shutdown returns, having stopped
// every listener. A second Shutdown returns the same.
func TestShutdownDrains(t *testing.T) {
	draining := newLogWatch("draining: refusing new streams and devices")
	n := start(t, Config{DataDir: dataDir(t), HostNames: []string{"127.0.0.1"}, MQTT: listen(t), Metrics: listen(t),
		DrainTimeout: 8 * time.Second, Logger: slog.New(draining)})
	svc, _, p := connectAndOpen(t, n)
	res, err := http.Get("http://" + n.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(metrics), "tether_") {
		t.Errorf("GET /metrics: %d %.100q", res.StatusCode, metrics)
	}
	http.DefaultClient.CloseIdleConnections()

	done := make(chan error, 1)
	go func() { done <- n.Shutdown(context.Background()) }()
	select {
	case <-draining.seen:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not drain")
	}
	_, err = svc.OpenStream(t.Context(), "dev1", "echo")
	var ae *service.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a new stream while draining: %v, want 503", err)
	}
	echo(t, p.svc, "while draining")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a stream open and time left to drain", err)
	default:
	}
	p.svc.Close()
	if err := <-p.devEnd; err != nil {
		t.Errorf("the device's side of the stream ended with %v, want the service's clean end", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, addr := range []net.Addr{n.HTTPAddr(), n.MQTTAddr(), n.MetricsAddr()} {
		if c, err := net.Dial("tcp", addr.String()); err == nil {
			c.Close()
			t.Errorf("%v still accepts connections after Shutdown", addr)
		}
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// failingListener is a listener whose Accept fails for good once broken,
// as one whose socket broke.
type failingListener struct {
	net.Listener
	broken chan struct{}
}

var errBroken = errors.New("accept: the socket broke")

// breakNow makes Accept fail from now on.
func (l *failingListener) breakNow() {
	close(l.broken)
	l.Listener.Close()
}

func (l *failingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	select {
	case <-l.broken:
		if err == nil {
			c.Close()
		}
		return nil, errBroken
	default:
		return c, err
	}
}

// TestListenerFailure: a listener that stops serving on its own closes
// Failed and says why in Err; Shutdown then skips the drain, ending the
// open stream at once rather than letting it run for the drain timeout.
func TestListenerFailure(t *testing.T) {
	fl := &failingListener{Listener: listen(t), broken: make(chan struct{})}
	n := start(t, Config{DataDir: dataDir(t), HostNames: []string{"127.0.0.1"}, HTTP: fl, MQTT: listen(t), DrainTimeout: 10 * time.Minute})
	_, _, p := connectAndOpen(t, n)
	if n.Err() != nil {
		t.Fatalf("Err before any failure: %v", n.Err())
	}
	fl.breakNow()
	select {
	case <-n.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed not closed after the HTTP listener broke")
	}
	if !errors.Is(n.Err(), errBroken) {
		t.Errorf("Err() = %v, want the listener's error", n.Err())
	}
	done := make(chan error, 1)
	go func() { done <- n.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown drained (for up to 10 minutes) after a listener failed")
	}
	if err := <-p.devEnd; err == nil {
		t.Error("the open stream ended cleanly; want it cut by the hub's close")
	}
}

// TestStreamLogsOpenedOnce: a start asks JetStream for the stream-log
// stream once (an update, then a creation on a new hub), not once for the
// start and again for the hub.
func TestStreamLogsOpenedOnce(t *testing.T) {
	url := natstest.Run(t, nil).ClientURL()
	watcher, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	// One channel for both subscriptions keeps the order in which the
	// server sent them: the node's marker comes after every request the
	// node made before it.
	msgs := make(chan *nats.Msg, 64)
	for _, subj := range []string{"$JS.API.STREAM.UPDATE." + streamlog.StreamName, "test.marker"} {
		if _, err := watcher.ChanSubscribe(subj, msgs); err != nil {
			t.Fatal(err)
		}
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	n := start(t, Config{DataDir: dataDir(t), Cluster: cluster.Options{URL: url}})
	if err := n.Cluster().Conn().Publish("test.marker", nil); err != nil {
		t.Fatal(err)
	}
	updates := 0
	for marked := false; !marked; {
		select {
		case m := <-msgs:
			if marked = m.Subject == "test.marker"; !marked {
				updates++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the node's marker never came")
		}
	}
	if updates != 1 {
		t.Errorf("the stream-log stream was opened %d times at start, want once", updates)
	}
}
