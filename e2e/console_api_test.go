package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// consoleGet calls the hub's REST API as the console does: a token of
// policy connstr in the Authorization header, nothing else.
func consoleGet(t *testing.T, ctx context.Context, h *testHub, connstr, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+h.Addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if connstr != "" {
		cs, err := sas.ParseConnectionString(connstr)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := cs.Token(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", tok)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}}
	t.Cleanup(c.CloseIdleConnections)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func policyConnstr(t *testing.T, h *testHub, name string) string {
	t.Helper()
	svc := h.service(t)
	p, err := svc.GetPolicy(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return svc.PolicyConnectionString(p, false)
}

// TestEventsFeed: GET /events gives the registry as it is (records
// without keys, connection states with their node), says when that is
// all, then each change as it happens; it takes RegistryRead.
func TestEventsFeed(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	connA := h.addDevice(t, "feed-a")
	h.addDevice(t, "feed-b")
	h.connectDevice(t, connA, device.WebSocket)
	eventually(t, 10*time.Second, "feed-a connected", func() bool {
		d, err := h.Registry.Get(context.Background(), "feed-a")
		return err == nil && d.ConnectionState == wire.StateConnected
	})

	for _, p := range []string{"", "service"} {
		cs := ""
		if p != "" {
			cs = policyConnstr(t, h, p)
		}
		res := consoleGet(t, context.Background(), h, cs, "/events")
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /events with policy %q: %d, want 401", p, res.StatusCode)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := consoleGet(t, ctx, h, policyConnstr(t, h, "registryRead"), "/events")
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("GET /events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(res.Body)
	next := func() hub.DeviceEvent {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("the feed ended: %v", lines.Err())
		}
		var ev hub.DeviceEvent
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		if strings.Contains(lines.Text(), "primaryKey") || strings.Contains(lines.Text(), "symmetricKey") {
			t.Fatalf("a key in the feed: %s", lines.Text())
		}
		return ev
	}
	records := map[string]bool{}
	var presence hub.DeviceEvent
	for ev := next(); ev.Type != "synced"; ev = next() {
		switch ev.Type {
		case "device":
			records[ev.DeviceID] = ev.Device != nil && ev.Device.Status == wire.StatusEnabled
		case "presence":
			if ev.DeviceID == "feed-a" {
				presence = ev
			}
		}
	}
	if !records["feed-a"] || !records["feed-b"] || len(records) != 2 {
		t.Errorf("snapshot records: %v", records)
	}
	if presence.ConnectionState != wire.StateConnected || presence.Node == "" || presence.ConnectionStateUpdatedTime == nil {
		t.Errorf("snapshot presence of feed-a: %+v", presence)
	}

	// Changes, as they happen: a new device, a disable, a delete.
	svc := h.service(t)
	h.addDevice(t, "feed-c")
	if _, err := svc.SetDeviceStatus(ctx, "feed-a", false); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteDevice(ctx, "feed-b"); err != nil {
		t.Fatal(err)
	}
	var sawNew, sawDisabled, sawOffline, sawDeleted bool
	for !(sawNew && sawDisabled && sawOffline && sawDeleted) {
		ev := next()
		switch {
		case ev.Type == "device" && ev.DeviceID == "feed-c":
			sawNew = true
		case ev.Type == "device" && ev.DeviceID == "feed-a" && ev.Device.Status == wire.StatusDisabled:
			sawDisabled = true
		case ev.Type == "presence" && ev.DeviceID == "feed-a" && ev.ConnectionState == wire.StateDisconnect:
			sawOffline = true
		case ev.Type == "deleted" && ev.DeviceID == "feed-b":
			sawDeleted = true
		}
	}
}

// TestNodesAndStreamPolicy: GET /nodes describes the node (ready, its
// version, the devices it holds), and GET /streams says which policy
// opened each stream.
func TestNodesAndStreamPolicy(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "nodes-a"), device.WebSocket)
	serveEcho(t, dc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := h.service(t).OpenStream(ctx, "nodes-a", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ro := policyConnstr(t, h, "registryRead")
	var nodes []hub.NodeInfo
	decode(t, consoleGet(t, ctx, h, ro, "/nodes"), &nodes)
	if len(nodes) != 1 {
		t.Fatalf("nodes: %+v", nodes)
	}
	n := nodes[0]
	if !n.Ready || n.Draining || n.Devices != 1 || n.Streams != 1 || n.Version == "" || n.GoVersion == "" || n.Started.IsZero() || n.Name == "" {
		t.Errorf("node: %+v", n)
	}
	var streams []wire.StreamInfo
	decode(t, consoleGet(t, ctx, h, ro, "/streams"), &streams)
	if len(streams) != 1 || streams[0].Policy != "iothubowner" {
		t.Errorf("streams: %+v", streams)
	}
	if res := consoleGet(t, ctx, h, policyConnstr(t, h, "service"), "/nodes"); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /nodes with policy service (no RegistryRead): %d, want 401", res.StatusCode)
	}
}

func decode(t *testing.T, res *http.Response, v any) {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s (%v)", res.Request.URL.Path, res.StatusCode, b, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v: %s", res.Request.URL.Path, err, b)
	}
}
