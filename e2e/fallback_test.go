package e2e

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
)

// balancer is a reverse proxy in front of a hub that answers its first
// request 502, as a balancer does while the hub behind it restarts, and
// passes every later one through, WebSocket upgrades included. It counts
// what it was asked: one-request openings (upgrades on a stream path) and
// stream POSTs.
type balancer struct {
	srv *httptest.Server

	mu                  sync.Mutex
	failed              bool
	upgrades, posts     int
	upgrade502, post502 int
}

func startBalancer(t *testing.T, h *testHub) *balancer {
	t.Helper()
	target, err := url.Parse("https://" + h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: &http.Transport{TLSClientConfig: h.TLS.Clone(), ForceAttemptHTTP2: false},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	b := &balancer{}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stream := strings.Contains(r.URL.Path, "/streams/")
		upgrade := stream && r.Method == http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
		b.mu.Lock()
		fail := !b.failed
		b.failed = true
		switch {
		case upgrade:
			b.upgrades++
			if fail {
				b.upgrade502++
			}
		case stream && r.Method == http.MethodPost:
			b.posts++
			if fail {
				b.post502++
			}
		}
		b.mu.Unlock()
		if fail {
			// What nginx answers while its upstream is down.
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>\n")
			return
		}
		rp.ServeHTTP(w, r)
	}))
	b.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

// A balancer's 502 to a one-request opening (its hub restarting) makes
// that stream fall back to the POST, and only that one: the next stream
// opens in one request again. Only the hub's own word that it lacks the
// opening (an answer without its marker that is no balancer's) switches a
// client to two requests for good (TestOpenStreamFallsBackToPOST).
func TestOneRequestAfterBalancerError(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	serveEcho(t, h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket))
	b := startBalancer(t, h)

	owner, err := sas.ParseConnectionString(h.Owner)
	if err != nil {
		t.Fatal(err)
	}
	owner.HostName = b.srv.Listener.Addr().String()
	tlsConf := h.TLS.Clone()
	tlsConf.RootCAs = tlsConf.RootCAs.Clone()
	tlsConf.RootCAs.AddCert(b.srv.Certificate())
	// The one-request opening and its fallbacks are what is tested: no
	// session (whose dial the balancer would see first).
	svc, err := service.New(owner.String(), service.Options{TLSConfig: tlsConf, NoSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, err := svc.OpenStream(ctx, "dev1", "echo")
		cancel()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		echoOnce(t, conn, fmt.Sprintf("through the balancer %d", i))
		conn.Close()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.upgrade502 != 1 {
		t.Fatalf("the balancer's 502 went to %d upgrades and %d POSTs, want the first upgrade", b.upgrade502, b.post502)
	}
	// Stream 0: the upgrade (502), then the POST; stream 1: an upgrade on
	// a new connection; stream 2: an upgrade too, which the balancer sees
	// unless it goes as the next request on stream 1's connection (reuse,
	// tunnelled past the balancer's handler). No POST but the first.
	if b.posts != 1 || b.upgrades < 2 {
		t.Errorf("the balancer saw %d one-request openings and %d POSTs, want 2 or 3 and 1: a 502 switched the client to two requests", b.upgrades, b.posts)
	}
}
