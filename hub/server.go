// Package hub is Tether's hub: the service REST API, the registry REST API,
// the device control channel and the streaming endpoint, tied together by
// routing over NATS. A Server is an http.Handler plus an MQTT acceptor; it
// owns no listeners, so cmd/tetherd (or a test) decides ports and TLS.
//
// One stream flows like this: the node that answers the service's REST call
// is the stream's home. It opens the stream in its relay (tokens live in its
// memory, the streaming URL names it), then asks over NATS, on a subject of
// the device's own, whichever node holds the device's MQTT session to pass
// the request on. The answer comes back the same way. Bytes never cross
// between nodes; only the small request and answer do.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-io/tether/hub/broker"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/hub/streamlog"
	"github.com/tether-io/tether/hub/termrec"
	"github.com/tether-io/tether/wire"
)

// Options configure a Server. The zero value of each optional field means
// its default.
type Options struct {
	Cluster  *cluster.Cluster   // required
	Registry *registry.Registry // required

	// HostNames are the names the hub answers to; a SAS token's sr must
	// name one of them (with or without a port). At least one.
	HostNames []string
	// PublicURL is what streaming URLs point at, e.g. https://hub:443.
	// Required: only the binary knows its listeners.
	PublicURL string
	// HubName is the {hub} segment of streaming URLs; default the first
	// host name.
	HubName string

	// Window is the handshake window of a stream: both sides must reach the
	// streaming endpoint within it. Default 60 s.
	Window time.Duration
	// MaxWindow caps the timeouts a service may ask for. Default 120 s.
	MaxWindow time.Duration

	// LogRetention is how long stream-log records are kept; default 7 days.
	LogRetention time.Duration

	// Limits against floods and hostile input (limits.go); each zero field
	// is its default, a negative one turns that limit off.
	Limits Limits
	// Replicas of the stream-log stream when it is created; default 1.
	// A clustered hub passes Cluster.Replicas().
	Replicas int
	// StreamLogs is the stream-log store when the caller has opened it
	// (hub/node does, with its start's patience); nil: New opens it.
	StreamLogs *streamlog.Store
	// NoSessions turns mux sessions (wire.PathMuxService and
	// wire.PathMuxDevices) off: their paths answer 404, as a hub without
	// them, and Tether's ends use streams of their own WebSocket.
	NoSessions bool
	// RecordTerminals, when set, is the folder where the hub records each
	// terminal session it relays, as asciicast v2 (hub/termrec); empty:
	// nothing is recorded.
	RecordTerminals string

	Logger *slog.Logger
}

// Server is one hub node.
//
// Lock order, outermost first: the broker's callback stripe, then mu, then
// the broker's own lock (broker.Broker writes down its side). The broker
// calls deviceConnected and deviceDisconnected under the stripe, and they
// take mu; under mu the hub asks the broker for a session's credential or
// remote address, or drops a session (which may write the connection's
// goodbye, within a deadline). Also taken under mu, and leaves: the
// presence queue's lock, the NATS connection's (subscribing, unsubscribing
// and publishing only buffer) and the logger's. invMu is a leaf, as are
// the locks inside lame, follow, authLog and lim; none of the hub's locks
// is held while calling the relay.
type Server struct {
	// Set once in New, before the Server is in use; read without a lock.
	opts   Options
	log    *slog.Logger
	reg    *registry.Registry
	nc     *nats.Conn
	node   string
	relay  *relay.Relay
	rec    *termrec.Recorder // nil unless Options.RecordTerminals
	broker *broker.Broker
	mux    *http.ServeMux
	// reusedMux serves requests on reused stream connections (serveReused).
	reusedMux *http.ServeMux
	wsURL     *url.URL
	// routeReqs carries the stream requests of every device session here:
	// one channel shared by their subscriptions, read by one goroutine
	// (routeLoop), where a callback subscription would hold a goroutine
	// per idle device.
	routeReqs     chan *nats.Msg
	routeReqsDone chan struct{} // closed by Close: routeLoop returns
	kickSub       *nats.Subscription
	ctlSub        *nats.Subscription // streams listing
	killSub       *nats.Subscription // kills of streams (streams.go)
	sessSub       *nats.Subscription // session claims of other nodes (takeover.go)
	nodesSub      *nats.Subscription // descriptions of the nodes (nodes.go)
	logs          *streamlog.Store
	journal       *streamlog.Journal // streams open here (interrupted.go)
	metrics       *metrics

	// Each guards itself, with a lock of its own or atomics.
	presence *presenceQueue // connection states on their way to the registry (presence.go)
	lame     lameDuck       // drain state (drain.go)
	follow   followers      // stream-log followers, ended by Drain (streamlogs.go)
	authLog  *logLimiter    // failed logins: a flood must not flood the log
	lim      *limiter       // limits.go
	muxes    muxSessions    // mux sessions (mux.go)
	// keys is what withdrawn credentials opened (keys.go): its epoch is
	// atomic, its stop set once in New, its modules guarded by mu.
	keys keyState
	wg   sync.WaitGroup

	// Guarded by mu.
	mu          sync.Mutex
	sessions    map[string]*session     // by MQTT client id
	seq         uint64                  // numbers this node's sessions
	closed      bool                    // Close has begun
	takeoverLog map[string]takeoverLine // by client id (takeover.go)

	// Guarded by invMu.
	invMu       sync.Mutex
	invocations map[string]*invocation // by stream id, until the stream ends
}

// session is one device's MQTT session on this node and its NATS
// subscription, through which other nodes reach it.
type session struct {
	id      string
	sub     *nats.Subscription
	touched time.Time // last lastActivityTime written
}

// New validates opts and builds a Server. It starts no listener.
func New(opts Options) (*Server, error) {
	if opts.Cluster == nil || opts.Registry == nil {
		return nil, errors.New("hub: Cluster and Registry are required")
	}
	if len(opts.HostNames) == 0 {
		return nil, errors.New("hub: at least one host name is required")
	}
	pub, err := url.Parse(opts.PublicURL)
	if err != nil || pub.Host == "" || (pub.Scheme != "https" && pub.Scheme != "http") {
		return nil, fmt.Errorf("hub: public URL %q must be https://host[:port]", opts.PublicURL)
	}
	ws := *pub
	ws.Scheme = map[string]string{"https": "wss", "http": "ws"}[pub.Scheme]
	ws.Path, ws.RawPath = "", ""
	if opts.HubName == "" {
		opts.HubName = opts.HostNames[0]
	}
	if opts.Window <= 0 {
		opts.Window = 60 * time.Second
	}
	if opts.MaxWindow <= 0 {
		opts.MaxWindow = 120 * time.Second
	}
	if opts.MaxWindow < opts.Window {
		opts.MaxWindow = opts.Window
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		reg:      opts.Registry,
		nc:       opts.Cluster.Conn(),
		node:     opts.Cluster.Node(),
		wsURL:    &ws,
		sessions: make(map[string]*session),
		presence: newPresenceQueue(opts.Registry),
		// A request waits here only while routeLoop unmarshals the ones
		// before it; past the capacity NATS drops it as a slow consumer.
		routeReqs:     make(chan *nats.Msg, 4096),
		routeReqsDone: make(chan struct{}),

		invocations: make(map[string]*invocation),
		authLog:     newLogLimiter(10, time.Second),
		lim:         newLimiter(opts.Limits, opts.Logger),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Retried: in a cluster JetStream may leave one of several identical
	// requests from nodes starting together unanswered.
	err = cluster.Retry(ctx, s.log, "opening the stream logs", func(ctx context.Context) error {
		var err error
		lopts := streamlog.Options{Retention: opts.LogRetention, Replicas: opts.Replicas}
		if s.logs = opts.StreamLogs; s.logs == nil {
			s.logs, err = streamlog.Open(ctx, opts.Cluster.JetStream(), lopts)
		}
		if err == nil {
			s.journal, err = streamlog.OpenJournal(ctx, opts.Cluster.JetStream(), opts.Cluster.Name(), lopts)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.wg.Add(2)
	go s.presenceWorker()
	go s.routeLoop()
	if opts.RecordTerminals != "" {
		if s.rec, err = termrec.New(opts.RecordTerminals, s.log.With("part", "recordings")); err != nil {
			return nil, fmt.Errorf("hub: %w", err)
		}
	}
	s.relay = relay.New(relay.Options{
		Tap:    s.recordingTap(),
		Logger: s.log.With("part", "relay"),
		Window: opts.Window,
		OnDone: s.relayDone,

		MaxStreams:          s.lim.l.StreamsPerHub,
		MaxStreamsPerDevice: s.lim.l.StreamsPerDevice,
		MaxPending:          s.lim.l.PendingHandshakes,
		MaxMessage:          s.lim.l.MaxMessageBytes,
		IdleTimeout:         s.lim.l.StreamIdleTimeout,
		CloseTimeout:        s.lim.l.StreamCloseTimeout,
		OnLimit:             s.relayLimited,
		IdleHandler:         http.HandlerFunc(s.serveReused),
	})
	s.broker, err = broker.New(broker.Options{
		Logger:       s.log.With("part", "mqtt"),
		Authenticate: s.authenticateDevice,
		OnConnect:    s.deviceConnected,
		OnDisconnect: s.deviceDisconnected,
		OnTakeover:   s.sessionTakenOver,

		MaxConnsPerSource: s.lim.l.MQTTConnsPerSource,
		ConnRatePerSource: s.lim.l.MQTTConnRatePerSource,
		Admit:             s.admitDevice,
		OnLimit:           s.brokerLimited,
	})
	if err != nil {
		s.relay.Close()
		s.presence.close()
		close(s.routeReqsDone)
		s.wg.Wait()
		return nil, fmt.Errorf("hub: starting the MQTT broker: %w", err)
	}
	s.kickSub, err = s.nc.Subscribe(kickSubject, s.onKick)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("hub: subscribing to %s: %w", kickSubject, err)
	}
	s.ctlSub, err = s.nc.Subscribe(streamsSubject, s.onStreamsRequest)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("hub: subscribing to %s: %w", streamsSubject, err)
	}
	s.killSub, err = s.nc.Subscribe(killSubject, s.onKillRequest)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("hub: subscribing to %s: %w", killSubject, err)
	}
	s.sessSub, err = s.nc.Subscribe(sessionSubject, s.onSessionClaim)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("hub: subscribing to %s: %w", sessionSubject, err)
	}
	s.nodesSub, err = s.nc.Subscribe(nodesSubject, s.onNodesRequest)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("hub: subscribing to %s: %w", nodesSubject, err)
	}
	if err := s.watchKeys(); err != nil {
		s.Close()
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.metrics = newMetrics(s)
	s.metrics.reg.MustRegister(s.lim.counted)
	s.clearPreviousLife()
	s.recordInterrupted()
	s.mux = s.routes()
	s.muxRoutes(s.mux)
	s.reusedMux = s.reusedRoutes()
	return s, nil
}

// ServeHTTP serves the REST APIs, the streaming endpoint and MQTT over
// WebSocket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	markOneRequest(w, r)
	if s.refuseWhileDraining(w, r) || s.backedOff(w, r) {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// markOneRequest marks the answer to a one-request stream opening as the
// hub's, whatever answers it (a refusal while draining or backed off
// included): a client falls back to the POST only for a hub without it.
func markOneRequest(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && isStreamRequest(r.URL.Path) {
		w.Header().Set(wire.HeaderOneRequest, "1")
	}
}

// isStreamRequest reports whether path is a stream request's:
// /twins/{id}/streams/{name} or /twins/{id}/modules/{module}/streams/{name}.
func isStreamRequest(path string) bool {
	return strings.HasPrefix(path, "/twins/") && strings.Contains(path, "/streams/")
}

// serveReused serves a request read on a reused stream connection, with
// the same refusals as ServeHTTP.
func (s *Server) serveReused(w http.ResponseWriter, r *http.Request) {
	markOneRequest(w, r)
	if s.refuseWhileDraining(w, r) || s.backedOff(w, r) {
		return
	}
	s.reusedMux.ServeHTTP(w, r)
}

// ServeMQTT accepts device connections (MQTT over TLS: ln is expected to
// be a TLS listener) until ln is closed.
func (s *Server) ServeMQTT(ln net.Listener) error { return s.broker.Serve(ln) }

// Ready reports whether the hub can take devices and services: routing and
// storage answer.
func (s *Server) Ready() error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("hub: closed")
	}
	return s.opts.Cluster.Ready()
}

// Close disconnects every device, ends every stream and releases the
// device subjects. It waits for the goroutines it started. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	for _, sub := range []*nats.Subscription{s.kickSub, s.ctlSub, s.killSub, s.sessSub, s.nodesSub} {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
	if s.keys.stop != nil {
		s.keys.stop()
	}
	err := errors.Join(s.broker.Close(), s.relay.Close())
	// After the relay: its streams' close frames go out on the sessions
	// before they close.
	s.closeMuxes()
	s.mu.Lock()
	for id, sess := range s.sessions {
		_ = sess.sub.Unsubscribe()
		delete(s.sessions, id)
		s.markPresence(id, sess.id, false)
	}
	s.presence.close()
	close(s.routeReqsDone)
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// clearPreviousLife marks Disconnected the devices that an earlier run of
// this node (same name, another random suffix) left Connected when it
// died without saying goodbye.
func (s *Server) clearPreviousLife() {
	name := s.opts.Cluster.Name()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := s.reg.ClearSessions(ctx, func(session string) bool {
		node, _, _ := strings.Cut(session, "/")
		i := strings.LastIndexByte(node, '-')
		return node != s.node && i > 0 && node[:i] == name
	})
	if err != nil {
		s.log.Warn("clearing connection states of an earlier run", "err", err)
	}
	if n > 0 {
		s.log.Info("cleared connection states left by an earlier run", "devices", n)
	}
}

// streamURL is the streaming URL of a stream homed on this node.
func (s *Server) streamURL(st *relay.Stream) string {
	return s.wsURL.String() + wireBridgePath(s.opts.HubName, st)
}

// hostNames lists every name a token's sr may carry for this hub.
func (s *Server) hostNames() []string {
	names := append([]string(nil), s.opts.HostNames...)
	if h := hostOnly(s.wsURL.Host); !containsFold(names, h) {
		names = append(names, h)
	}
	return names
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// ctxTimeout bounds a storage call made on behalf of a peer.
func ctxTimeout(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, 5*time.Second)
}
