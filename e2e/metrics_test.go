package e2e

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/service"
)

// scrape fetches and parses the metrics as Prometheus would.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// value returns the value of the family's sample with the given labels.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with %v", name, labels)
	return 0
}

func TestMetricsMove(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	ms := httptest.NewServer(h.Server.MetricsHandler())
	defer ms.Close()
	before := scrape(t, ms.URL)
	for _, name := range []string{"tether_devices_connected", "tether_streams_open", "tether_nats_connected", "tether_jetstream_ready", "go_goroutines"} {
		if before[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	if value(t, before, "tether_jetstream_ready") != 1 || value(t, before, "tether_nats_connected") != 1 {
		t.Error("a healthy hub reports NATS or JetStream down")
	}

	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	serveEcho(t, dc)
	svc := h.service(t)
	conn, err := svc.OpenStream(context.Background(), "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, conn, "0123456789")
	mid := scrape(t, ms.URL)
	if value(t, mid, "tether_streams_open") != 1 || value(t, mid, "tether_devices_connected") != 1 {
		t.Errorf("open streams %v, connected devices %v", value(t, mid, "tether_streams_open"), value(t, mid, "tether_devices_connected"))
	}
	conn.Close()
	h.addDevice(t, "dev2")
	if _, err := svc.OpenStream(context.Background(), "dev2", "x"); !errors.Is(err, service.ErrDeviceOffline) {
		t.Fatal(err)
	}
	h.rawCreateStream(t, "dev1", "x", "SharedAccessSignature sr=bad&sig=bad&se=1").Body.Close()

	var after map[string]*dto.MetricFamily
	eventually(t, 10*time.Second, "the accepted stream to be counted", func() bool {
		after = scrape(t, ms.URL)
		return value(t, after, "tether_streams_total", "result", "accepted") == 1
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tether_streams_total", []string{"result", "offline"}, 1},
		{"tether_stream_bytes_total", []string{"direction", "to_device"}, 10},
		{"tether_stream_bytes_total", []string{"direction", "to_service"}, 10},
		{"tether_stream_setup_seconds", nil, 1},
		{"tether_service_auth_failures_total", nil, 1},
		{"tether_streams_open", nil, 0},
	} {
		if got := value(t, after, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if value(t, after, "tether_mqtt_connections_total") < 1 {
		t.Error("no MQTT connection counted")
	}

	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}}).Get("https://" + h.Addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz: %v %v", resp, err)
	}
	resp.Body.Close()
}
