package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tether-io/tether/service"
)

// startNATS runs a NATS server with JetStream on loopback until the test
// ends and returns its client URL.
func startNATS(t *testing.T) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	return ns.ClientURL()
}

// TestDrainRefusalSaysWhereToGo: a draining node refuses new streams and
// device connections. A node that is the whole hub says it is shutting
// down and sends nobody to another node; a node that may have others (on
// an external NATS) says to go to another node.
func TestDrainRefusalSaysWhereToGo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nats   bool
		stream string // the refused stream's message
		device string // the refused WebSocket connection's body
	}{
		{"single node", false, "This hub is shutting down.", "this hub is shutting down\n"},
		{"node on an external NATS", true, "This hub node is shutting down; retry the request on another node.", "this hub node is shutting down; connect to another node\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o hubOptions
			if tc.nats {
				o.nats = startNATS(t)
			}
			h := startHub(t, o)
			h.addDevice(t, "dev1")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// Nothing to wait for: no stream, no device. Draining stays on.
			if err := h.Server.Drain(ctx, 0); err != nil {
				t.Fatal(err)
			}

			_, err := h.service(t).OpenStream(ctx, "dev1", "ssh")
			var ae *service.APIError
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("stream while draining: %v, want a 503", err)
			}
			if ae.Message != tc.stream {
				t.Errorf("stream refused with %q, want %q", ae.Message, tc.stream)
			}

			c := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}, Timeout: 10 * time.Second}
			resp, err := c.Get("https://" + h.Addr + "/$iothub/websocket")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || string(body) != tc.device {
				t.Errorf("device connection while draining: %d %q, want 503 %q", resp.StatusCode, body, tc.device)
			}
		})
	}
}
