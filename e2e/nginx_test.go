package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// nginxConf is docs/load-balancer.md's nginx example around what a test
// needs to run it unprivileged and in the foreground: its own prefix for
// temporary files, logs to stderr, one process (master_process off, so
// that killing it at the end leaves no workers behind).
const nginxConf = `daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events {}
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }

    server {
        listen %[2]s ssl;
        ssl_certificate     %[4]s;
        ssl_certificate_key %[5]s;

        # From docs/load-balancer.md:
        location / {
            proxy_pass http://%[3]s;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
`

// TestBehindNginx runs the hub as docs/load-balancer.md says: plain HTTP
// behind a real nginx that terminates TLS, with the documented proxy
// settings. The agent's control channel (MQTT over WebSocket), the CLI's
// REST calls and the streams of both sides all pass through nginx, and so
// do the reused stream connections: bytes come back whole, one stream
// after another and several at once. A device that speaks as the Azure C
// SDK does connects and streams through nginx too.
func TestBehindNginx(t *testing.T) {
	t.Parallel()
	nginx := needTools(t, "nginx")["nginx"]
	tetherd, tether := buildBinaries(t)

	dir := t.TempDir()
	ca := newTestCA(t, "Tether test balancer CA", nil)
	certFile, keyFile := writeCertFiles(t, issueCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca))
	caFile := filepath.Join(dir, "balancer-ca.pem")
	if err := os.WriteFile(caFile, []byte(ca.pem), 0o600); err != nil {
		t.Fatal(err)
	}

	hubAddr, lbAddr := freePort(t), freePort(t)
	data := filepath.Join(dir, "data")
	hub := startProc(t, nil, tetherd, "--tls=false", "--data", data, "--listen", hubAddr,
		"--public-url", "https://"+lbAddr, "--hostname", "127.0.0.1", "--mqtt-listen", "off")

	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, lbAddr, hubAddr, certFile, keyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	lb := startProc(t, nil, nginx, "-p", dir, "-c", conf)

	// The balancer's health check, through the balancer.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(ca.pem))
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	eventually(t, 60*time.Second, "/readyz through nginx", func() bool {
		select {
		case err := <-hub.done:
			hub.done <- err
			t.Fatalf("tetherd exited: %v", err)
		case err := <-lb.done:
			lb.done <- err
			t.Fatalf("nginx exited: %v", err)
		default:
		}
		resp, err := hc.Get("https://" + lbAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// The connection strings the hub writes name the balancer.
	owner, err := os.ReadFile(filepath.Join(data, "owner.connstr"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(owner), "HostName="+lbAddr+";") {
		t.Fatalf("owner connection string does not name the balancer %s: %s", lbAddr, owner)
	}
	h := &procHub{
		tether: tether,
		env:    []string{"TETHER_HUB=" + strings.TrimSpace(string(owner)), "TETHER_CA=" + caFile},
		dir:    data,
		hub:    hub,
	}
	echoAddr := startEcho(t)
	h.startAgent(t, "behind-nginx", "echo="+echoAddr)
	fwd := h.startForward(t, "behind-nginx", "echo")

	// One stream after another: from the second on, the forwarder and the
	// agent offer each to a connection the last one left idle, whose
	// upgrade request then goes through nginx's tunnel of the first.
	for i := range 3 {
		echoRandom(t, fwd, 2<<20, fmt.Sprintf("stream %d", i))
	}
	// Several at once.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { echoRandom(t, fwd, 256<<10, fmt.Sprintf("concurrent stream %d", i)) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Each stream has its one stream-log record, with every byte counted:
	// the hub saw whole streams through the balancer.
	want := map[int64]int{2 << 20: 3, 256 << 10: 8}
	eventually(t, 30*time.Second, "a stream-log record of each stream", func() bool {
		out, _, err := runCmd(t, h.env, tether, "logs", "--device", "behind-nginx", "--json")
		if err != nil {
			return false
		}
		got := map[int64]int{}
		for line := range strings.Lines(out) {
			var rec wire.StreamLog
			if json.Unmarshal([]byte(line), &rec) != nil {
				return false
			}
			p, err := rec.Props()
			if err != nil || p.Result != wire.ResultAccepted || p.BytesToDevice != p.BytesToService {
				t.Fatalf("stream-log record %s (%v)", line, err)
			}
			got[p.BytesToDevice]++
		}
		return maps.Equal(got, want)
	})

	// A device as the Azure C SDK connects one over MQTT over WebSocket
	// (subprotocol "MQTT" in capitals), through the balancer.
	cStr, stderr, err := runCmd(t, h.env, tether, "devices", "add", "c-sdk-behind-nginx")
	if err != nil {
		t.Fatalf("devices add: %v: %s", err, stderr)
	}
	d := dialAzureC(t, lbAddr, &tls.Config{RootCAs: pool}, strings.TrimSpace(cStr))
	served := make(chan error, 1)
	go func() {
		_, err := d.serveOneStream()
		served <- err
	}()
	echoRandom(t, h.startForward(t, "c-sdk-behind-nginx", "echo"), 1<<20, "a stream to the C SDK-style device")
	if err := <-served; err != nil {
		t.Errorf("the C SDK-style device's stream ended with %v, want a close handshake", err)
	}
}

// echoRandom sends n random bytes through the forwarder at addr to the
// echo server behind the agent and checks that the same bytes come back.
// It marks the test failed and returns, so that streams may run at once.
func echoRandom(t *testing.T, addr string, n int, what string) {
	t.Helper()
	payload := randomBytes(t, n)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()
	back := make([]byte, n)
	if _, err := io.ReadFull(c, back); err != nil {
		t.Errorf("%s: reading the echo: %v", what, err)
		return
	}
	if err := <-werr; err != nil {
		t.Errorf("%s: writing: %v", what, err)
	}
	if sha256.Sum256(back) != sha256.Sum256(payload) {
		t.Errorf("%s: bytes through nginx differ", what)
	}
}
