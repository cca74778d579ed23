package hub

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/internal/version"
)

// metrics are the hub's Prometheus metrics, on a registry of its own so
// that two hubs in one process (tests) never collide.
type metrics struct {
	reg         *prometheus.Registry
	streams     *prometheus.CounterVec
	setup       prometheus.Histogram
	bytes       *prometheus.CounterVec
	mqttConns   prometheus.Counter
	deviceAuth  prometheus.Counter
	serviceAuth prometheus.Counter
	muxOpened   *prometheus.CounterVec
	muxOpen     *prometheus.GaugeVec
	muxStreams  *prometheus.CounterVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_streams_total",
			Help: "Stream requests handled by this node (as the stream's home), by result: accepted, rejected, offline, timedOut, error.",
		}, []string{"result"}),
		setup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tether_stream_setup_seconds",
			Help:    "From the service's request to both sides joined, for streams that paired.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_stream_bytes_total",
			Help: "Payload bytes relayed by ended streams homed on this node, by direction: to_device, to_service.",
		}, []string{"direction"}),
		mqttConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_mqtt_connections_total",
			Help: "Device MQTT sessions established on this node.",
		}),
		deviceAuth: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_mqtt_auth_failures_total",
			Help: "Device CONNECTs refused: bad or expired token, unknown or disabled device.",
		}),
		serviceAuth: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_service_auth_failures_total",
			Help: "REST calls refused for their SAS token or policy.",
		}),
		muxOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_mux_sessions_total",
			Help: "Mux sessions (many streams on one connection) opened on this node, by kind: service, device.",
		}, []string{"kind"}),
		muxOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tether_mux_sessions_open",
			Help: "Mux sessions open on this node, by kind: service, device (data sessions).",
		}, []string{"kind"}),
		muxStreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_mux_streams_total",
			Help: "Streams opened on mux sessions on this node, by kind of session: service (opened by services), device (pushed to devices).",
		}, []string{"kind"}),
	}
	for _, k := range []string{muxService, muxDevice} {
		m.muxOpened.WithLabelValues(k)
		m.muxOpen.WithLabelValues(k)
		m.muxStreams.WithLabelValues(k)
	}
	for _, r := range []string{"accepted", "rejected", "offline", "timedOut", "error"} {
		m.streams.WithLabelValues(r) // present at zero, so rate() works from the start
	}
	m.bytes.WithLabelValues("to_device")
	m.bytes.WithLabelValues("to_service")
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	boolGauge := func(ok bool) float64 {
		if ok {
			return 1
		}
		return 0
	}
	m.reg.MustRegister(
		m.streams, m.setup, m.bytes, m.mqttConns, m.deviceAuth, m.serviceAuth, m.muxOpened, m.muxStreams,
		m.muxOpen,
		gauge("tether_devices_connected", "Devices with an MQTT session on this node.", func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.sessions))
		}),
		gauge("tether_streams_open", "Streams homed on this node, waiting for a side or relaying.", func() float64 {
			return float64(s.relay.Active())
		}),
		gauge("tether_nats_connected", "1 when this node's NATS connection is up.", func() float64 {
			return boolGauge(s.nc.IsConnected())
		}),
		gauge("tether_jetstream_ready", "1 when JetStream answers (registry, stream logs).", func() float64 {
			return boolGauge(s.opts.Cluster.Ready() == nil)
		}),
		buildInfo(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// buildInfo is the gauge tether_build_info, 1 with the build in its
// labels, as Prometheus' own exporters report theirs: a query joins it to
// see which version each node runs, during a rolling upgrade say.
func buildInfo() prometheus.Collector {
	v := version.Get()
	commit := v.Commit
	if commit == "" {
		commit = "unknown"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "tether_build_info",
		Help:        "1, with the version of tetherd, the commit it was built from and the Go version that built it.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": commit, "goversion": v.GoVersion},
	})
	g.Set(1)
	return g
}

// streamEnded counts one invocation; info is nil when no relay stream was
// opened.
func (m *metrics) streamEnded(result string, start time.Time, info *relay.Info) {
	m.streams.WithLabelValues(result).Inc()
	if info == nil {
		return
	}
	if info.PairedOK {
		m.setup.Observe(info.Paired.Sub(start).Seconds())
	}
	m.bytes.WithLabelValues("to_device").Add(float64(info.BytesToDevice))
	m.bytes.WithLabelValues("to_service").Add(float64(info.BytesToService))
}

// MetricsHandler serves the metrics in Prometheus text format. The binary
// puts it on a listener of its own, off by default and on loopback when
// on: metrics tell an attacker which devices are busy.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}
