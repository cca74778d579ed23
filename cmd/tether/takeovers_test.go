package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// `devices show` of a device whose session keeps being taken over prints
// the figures in its JSON and says on stderr what they mean; one takeover
// (a device back before the hub noticed its dead link) goes unmentioned.
func TestDevicesShowTakeovers(t *testing.T) {
	last := time.Date(2026, 5, 1, 10, 12, 3, 0, time.UTC)
	devices := map[string]wire.Device{
		"flappy": {DeviceID: "flappy", Status: "enabled", ConnectionState: "Connected",
			Takeovers: &wire.Takeovers{LastHour: 7, Last: last, DisplacedRemote: "203.0.113.7:51234", ByRemote: "198.51.100.4:40022"}},
		"once": {DeviceID: "once", Status: "enabled", ConnectionState: "Connected",
			Takeovers: &wire.Takeovers{LastHour: 1, Last: last, DisplacedRemote: "203.0.113.7:51234", ByRemote: "203.0.113.7:51300"}},
		"calm": {DeviceID: "calm", Status: "enabled", ConnectionState: "Connected"},
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := devices[strings.TrimPrefix(r.URL.Path, "/devices/")]
		if !ok || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(d)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	hub := []string{"--hub", "HostName=" + srv.Listener.Addr().String() + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + testPolicyKey, "--ca", ca}

	for id, warn := range map[string]bool{"flappy": true, "once": false, "calm": false} {
		out, stderr, err := tether(t, context.Background(), append(hub, "devices", "show", id)...)
		if err != nil {
			t.Fatalf("show %s: %v", id, err)
		}
		var d wire.Device
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("show %s printed %s (%v)", id, out, err)
		}
		want := devices[id].Takeovers
		if (want == nil) != (d.Takeovers == nil) || want != nil && *d.Takeovers != *want {
			t.Errorf("show %s: takeovers %+v, want %+v", id, d.Takeovers, want)
		}
		if !warn {
			if stderr != "" {
				t.Errorf("show %s wrote to stderr: %s", id, stderr)
			}
			continue
		}
		for _, s := range []string{"flappy", "7 times in the last hour", "198.51.100.4:40022 replaced 203.0.113.7:51234", "another agent", "key"} {
			if !strings.Contains(stderr, s) {
				t.Errorf("show %s: stderr %q does not say %q", id, stderr, s)
			}
		}
	}
}
