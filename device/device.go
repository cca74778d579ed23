// Package device is Tether's device SDK: it holds a device's control channel
// to the hub (MQTT 3.1.1, over WebSocket or TLS, as the Azure IoT Hub device
// SDKs speak it), hands the stream requests the hub sends to the caller, and
// turns an accepted request into a net.Conn joined to the service's side.
//
//	c, err := device.Dial(ctx, connStr, device.Options{})
//	for {
//		req, err := c.Accept(ctx)
//		...
//		conn, err := req.Accept(ctx) // or req.Reject()
//	}
//
// The first connection is made by Dial, so a wrong key, an untrusted
// certificate or an unreachable hub is reported there. After that the client
// keeps the channel up by itself until Close: every reconnect signs a fresh
// SAS token and waits an exponential, fully jittered delay, so a fleet that
// lost a hub node does not come back all at once. A client that the hub
// says was displaced by another connection with the device's identity (two
// agents with one key) logs so at warn and waits longer each time in a
// row, from MaxBackoff up to 10 minutes, rather than take the session back
// at once.
//
// With a Tether hub, the first stream request opens the device's data
// session beside it: one connection on which the hub opens the streams
// that follow, each answered on it, until 30 s pass without a stream
// (mux.go). Accept hands those requests out as any other;
// Options.NoSessions keeps every stream on a connection of its own.
//
// The SDK imports nothing of the hub, so an agent built on it stays small.
package device

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/certerr"
	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// Transport is how the device reaches the hub's MQTT endpoint.
type Transport int

const (
	// WebSocket is MQTT over wss://{HostName}/$iothub/websocket (subprotocol
	// "mqtt"). It is the default because it needs only the HTTPS port, which
	// firewalls in front of devices leave open.
	WebSocket Transport = iota
	// TLS is MQTT over TLS to Options.MQTTAddress ({host}:8883 by default).
	TLS
)

func (t Transport) String() string {
	switch t {
	case WebSocket:
		return "ws"
	case TLS:
		return "tls"
	default:
		return fmt.Sprintf("Transport(%d)", int(t))
	}
}

// Options configures Dial. The zero value works.
type Options struct {
	// TLSConfig is used for the MQTT connection and for the streams'
	// bridges. nil trusts the system roots. An empty ServerName is filled
	// with the connection string's host for MQTT and with each bridge URL's
	// host for streams, since a stream's bridge may live on another node.
	TLSConfig *tls.Config
	// Certificate is the device's X.509 client certificate (and key),
	// presented on the MQTT connection over either transport. A device
	// registered as selfSigned or certificateAuthority needs one, and its
	// connection string says x509=true; a device with keys needs none.
	Certificate *tls.Certificate
	Transport   Transport
	// MQTTAddress is the host:port for Transport TLS; {host}:8883 by default.
	MQTTAddress string
	// Hubs, when set, replaces the connection string's HostName as where
	// the device connects: HOST:PORT of hub nodes (or of balancers), tried
	// in a new random order on every (re)connect until one takes the
	// device. With WebSocket each is an HTTPS address; with TLS an MQTT
	// address (port 8883 when left out), and MQTTAddress is ignored. TLS
	// verifies each against its own host name (or IP), so every node's
	// certificate must cover the name it is listed by here. The SAS token
	// still names the connection string's HostName, which every node must
	// accept (tetherd --hostname). See hubs.go.
	Hubs []string
	// KeepAlive is the MQTT keep-alive, 20 s by default, counted in whole
	// seconds. With no traffic the client pings after KeepAlive and drops
	// the link when no answer comes within min(KeepAlive, 10 s): by default
	// a dead link is noticed about 30 s after it went quiet, well before a load balancer's usual 60 s idle
	// cut, and the pings keep such a balancer from cutting a healthy link.
	// The hub drops a device it has not heard from in 1.5 × KeepAlive.
	KeepAlive time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (1 s and 30 s by
	// default); see keepUp for how the delay grows and resets.
	MinBackoff, MaxBackoff time.Duration
	// WaitForHub makes Dial wait for a hub it cannot reach (refused, reset
	// or timed out, a name that does not resolve yet, a hub that answers
	// "server unavailable") rather than return the first failure: it
	// tries again with the reconnect delays until it connects or ctx ends,
	// logging the reason (see waitForHub). A hub that refuses the device
	// (ErrUnauthorized), a certificate that is not trusted, or any other
	// refusal still ends Dial at once: waiting would not change them.
	WaitForHub bool
	// Logger receives connection events; nil discards them. Keys and tokens
	// never reach it.
	Logger *slog.Logger
	// NoSessions keeps every stream on a connection of its own, even with
	// a hub that offers the device a session (mux.go): each request comes
	// over MQTT and joins its URL.
	NoSessions bool

	// sessionIdle, when set, replaces SessionIdle; tests shorten it.
	sessionIdle time.Duration

	// dial, when set, replaces dialing the broker; real is the dial it
	// replaces. Tests use it to fail connections in ways loopback cannot
	// (a DNS failure).
	dial func(ctx context.Context, real func(context.Context) (net.Conn, error)) (net.Conn, error)
}

// Errors returned by the client.
var (
	// ErrClosed is returned by calls on a closed client.
	ErrClosed = errors.New("device: client closed")
	// ErrUnauthorized means the hub refused the device's credentials
	// (CONNACK "not authorized" or "bad user name or password"): a wrong
	// key, an unknown or disabled device.
	ErrUnauthorized = errors.New("device: unauthorized")
)

var errNotConnected = errors.New("device: not connected to the hub")

// errSubscriptionRefused is a SUBACK failure code: the hub took the
// device but will not send it stream requests.
var errSubscriptionRefused = errors.New("the hub refused the subscription")

const (
	// requestQueue bounds the requests waiting for Accept: a caller that
	// stops accepting gets its streams rejected, not an ever-growing heap.
	// Above the hub's default cap of 100 streams per device, so that a
	// burst the hub admits at once is never rejected here for arriving
	// faster than Accept is called.
	requestQueue = 256
	// rejectBacklog bounds the rejects of requests that found the queue
	// full, waiting to go out on a connection whose hub does not read.
	rejectBacklog = 64
	// connectTimeout bounds one connection attempt: dial, TLS, WebSocket
	// upgrade, CONNECT/CONNACK and SUBSCRIBE/SUBACK.
	connectTimeout = 30 * time.Second
	// answerTimeout bounds publishing an answer to a stream request.
	answerTimeout = 10 * time.Second
	// tokenTTL is the lifetime of the SAS password; the hub checks it only
	// at CONNECT, and every reconnect signs a new one.
	tokenTTL = time.Hour
)

// DefaultMaxBackoff caps the reconnect delay when Options.MaxBackoff is
// zero. With full jitter, N devices that lost the same hub node come back
// at about N/30 per second once they reach the cap, a rate a restarted node
// absorbs; a longer cap would only leave devices offline longer after a
// short outage.
const DefaultMaxBackoff = 30 * time.Second

// Client is a device's connection to a hub. Its methods are safe for
// concurrent use.
type Client struct {
	cs        sas.ConnectionString
	clientID  string
	username  string
	transport Transport
	addr      string // where MQTT goes: a wss:// URL or a host:port; per attempt with hubs
	hubs      []hubTarget
	mqttTLS   *tls.Config
	bridgeTLS *tls.Config
	// streams keeps the connections of ended streams for later ones
	// (tether-stream.v2): a stream then costs no TLS handshake.
	streams   *wsconn.Pool
	keepAlive time.Duration
	minB      time.Duration
	maxB      time.Duration
	log       *slog.Logger
	dialHook  func(context.Context, func(context.Context) (net.Conn, error)) (net.Conn, error)
	// noSessions and sessionIdle are Options'; mux is the data session.
	noSessions  bool
	sessionIdle time.Duration
	mux         muxState

	requests chan *Request

	ctx    context.Context // the client's lifetime; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	cur atomic.Pointer[session] // the live MQTT session; nil while down
}

// session is one MQTT connection; a reconnect makes a new one.
type session struct {
	mc       *mqttConn
	up       time.Time
	lost     chan struct{} // closed when the connection is lost
	lostOnce sync.Once
	lostErr  error // why; written before lost is closed
	// later takes the rejects the reader must not wait to write
	// (mqttOptions.later); rejectBacklog deep.
	later chan string
	// displacedBy is the new connection's address once the hub has said
	// that it took this session over (displaced.go).
	displacedBy atomic.Pointer[string]
	// muxURL and muxAddr are where this connection's data session goes
	// (sessionTarget), muxTLS how: the connection's own TLS settings, so
	// that an X.509 device presents its certificate there too.
	muxURL, muxAddr string
	muxTLS          *tls.Config
}

func (s *session) markLost(err error) {
	s.lostOnce.Do(func() {
		s.lostErr = err
		close(s.lost)
	})
}

func (s *session) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// Dial connects the device named by connStr to its hub and returns once the
// device is connected and subscribed to stream requests. ctx bounds this
// first connection only.
func Dial(ctx context.Context, connStr string, opts Options) (*Client, error) {
	cs, err := sas.ParseConnectionString(connStr)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if !cs.IsDevice() {
		return nil, fmt.Errorf("device: %w: a device connection string (with DeviceId) is needed, not a policy's", sas.ErrConnectionString)
	}
	c := &Client{
		cs:        cs,
		clientID:  cs.DeviceID,
		streams:   wsconn.NewPool(),
		transport: opts.Transport,
		keepAlive: opts.KeepAlive,
		minB:      opts.MinBackoff,
		maxB:      opts.MaxBackoff,
		log:       opts.Logger,
		dialHook:  opts.dial,
		requests:  make(chan *Request, requestQueue),

		noSessions:  opts.NoSessions,
		sessionIdle: opts.sessionIdle,
	}
	// Azure's username shape: the hub reads host and device from it and
	// ignores the query.
	c.username = cs.HostName + "/" + cs.DeviceID + "/"
	if cs.ModuleID != "" {
		c.clientID += "/" + cs.ModuleID
		c.username += cs.ModuleID + "/"
	}
	c.username += "?api-version=" + wire.APIVersion + "&DeviceClientType=" + url.QueryEscape(clientType)
	if c.keepAlive <= 0 {
		c.keepAlive = 20 * time.Second
	}
	if c.keepAlive < time.Second {
		c.keepAlive = time.Second // MQTT counts keep-alive in whole seconds
	}
	if c.minB <= 0 {
		c.minB = time.Second
	}
	if c.maxB <= 0 {
		c.maxB = DefaultMaxBackoff
	}
	c.maxB = max(c.maxB, c.minB)
	if c.sessionIdle <= 0 {
		c.sessionIdle = SessionIdle
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("device", c.clientID)

	switch c.transport {
	case WebSocket:
		c.addr = "wss://" + cs.HostName + wire.PathMQTTWebSocket
	case TLS:
		c.addr = opts.MQTTAddress
		if c.addr == "" {
			c.addr = net.JoinHostPort(cs.Host(), "8883")
		}
	default:
		return nil, fmt.Errorf("device: unknown transport %d", int(c.transport))
	}

	if opts.TLSConfig != nil {
		c.bridgeTLS = opts.TLSConfig.Clone()
	} else {
		c.bridgeTLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c.mqttTLS = c.bridgeTLS.Clone()
	if c.mqttTLS.ServerName == "" {
		c.mqttTLS.ServerName = cs.Host()
	}
	if opts.Certificate != nil {
		// Only the control channel authenticates by certificate; the
		// bridges take the stream's token.
		c.mqttTLS.Certificates = []tls.Certificate{*opts.Certificate}
	}
	if cs.X509 && len(c.mqttTLS.Certificates) == 0 && c.mqttTLS.GetClientCertificate == nil {
		return nil, ErrNoCertificate
	}

	if err := c.setHubs(opts.Hubs, opts.TLSConfig); err != nil {
		return nil, err
	}

	c.ctx, c.cancel = context.WithCancel(context.Background())
	s, err := c.connectAny(ctx)
	if err != nil && opts.WaitForHub {
		s, err = c.waitForHub(ctx, err)
	}
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.cur.Store(s)
	c.log.Info("connected to hub", "transport", c.transport.String(), "addr", c.addr)
	c.wg.Add(1)
	go c.keepUp(s)
	return c, nil
}

// Accept waits for the next stream request.
func (c *Client) Accept(ctx context.Context) (*Request, error) {
	select {
	case <-c.ctx.Done():
		return nil, ErrClosed
	default:
	}
	select {
	case r := <-c.requests:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, ErrClosed
	}
}

// Connected reports whether the control channel is up right now.
func (c *Client) Connected() bool {
	s := c.cur.Load()
	return s != nil && !s.isLost()
}

// Close rejects the requests still waiting for Accept, disconnects from
// the hub, stops reconnecting and waits for the client's goroutines. While
// the client is reconnecting there is no connection to answer on: the
// requests, which came on the connection that was lost, are dropped, and
// the hub answers their services itself. It is idempotent.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.streams.Close()
	})
	return nil
}

// keepUp watches the live session and, once it is lost, reconnects until it
// succeeds or the client is closed. Attempt n in a row waits
// backoff(n, MinBackoff, MaxBackoff): uniform in [0, min(MaxBackoff,
// MinBackoff·2ⁿ)], so even the first reconnect of a fleet that lost its
// node together is spread over a second, and later ones over up to
// MaxBackoff. It owns the session it is given.
//
// A session the hub says was taken over by another connection with this
// device's identity (displaced.go) waits displacedDelay instead before its
// first reconnect.
func (c *Client) keepUp(s *session) {
	defer c.wg.Done()
	// However it ends, Accept answers ErrClosed from now on: what is left
	// in the queue is for nobody.
	defer c.dropQueued()
	attempt := 0
	displacedLimit := max(c.maxB, maxDisplacedDelay)
	var (
		displacements int
		lastDisplaced time.Time
	)
	for {
		select {
		case <-c.ctx.Done():
			c.cur.Store(nil)
			c.rejectQueued(s)
			c.closeMux()
			// 250 ms lets DISCONNECT go out, so the hub marks the
			// device offline at once instead of at keep-alive expiry.
			s.mc.disconnect(250 * time.Millisecond)
			return
		case <-s.lost:
		}
		c.cur.Store(nil)
		// The hub drops the data session with the control channel.
		c.closeMux()
		attempt = attemptAfterLoss(attempt, time.Since(s.up), c.maxB)
		wait := time.Duration(-1) // the first reconnect's delay, when not the usual
		if by, ok := s.displaced(); ok {
			displacements = displacementsInARow(displacements, time.Since(lastDisplaced), displacedLimit)
			lastDisplaced = time.Now()
			wait = displacedDelay(displacements, c.maxB, displacedLimit, rand.Int64N)
			c.log.Warn("displaced by another connection with this device's identity", "from", by,
				"in_a_row", displacements, "retry_in", wait.Round(time.Millisecond), "hint", displacedHint)
		} else {
			c.log.Warn("connection to hub lost", "err", s.lostErr)
		}
		// Every failure is retried alike: refused, reset, timed out, a DNS
		// name that does not resolve (yet), even "unauthorized" (the device
		// may be re-enabled). Only Dial gives up, so that a wrong setup
		// shows at once: on any failure, or with Options.WaitForHub on a
		// refusal only.
		for {
			d := backoff(attempt, c.minB, c.maxB, rand.Int64N)
			if wait >= 0 {
				d, wait = wait, -1
			}
			attempt++
			c.log.Info("reconnecting", "attempt", attempt, "delay", d.Round(time.Millisecond))
			t := time.NewTimer(d)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			ns, err := c.connectAny(c.ctx)
			if err == nil {
				s = ns
				c.cur.Store(s)
				c.log.Info("reconnected to hub", "attempt", attempt, "addr", c.addr)
				break
			}
			if c.ctx.Err() != nil {
				return
			}
			c.log.Warn("reconnect failed", "attempt", attempt, "err", err)
		}
	}
}

// attemptAfterLoss is the backoff attempt to resume from when a link that
// stayed up for up is lost, attempt being where the last reconnect left
// off. A link that stayed up for the longest delay was healthy: delays start
// afresh (the first within [0, MinBackoff]). One that dropped sooner keeps
// growing them, so a hub that accepts the device and then kicks it out, or
// falls over under the returning fleet, is not hammered.
func attemptAfterLoss(attempt int, up, maxB time.Duration) int {
	if up >= maxB {
		return 0
	}
	return attempt
}

// rejectQueued answers 400 to the requests nobody will accept now, so their
// services hear it at once instead of waiting out the hub's timeout: over
// MQTT, or on the session for a stream the hub opened there.
func (c *Client) rejectQueued(s *session) {
	for {
		select {
		case r := <-c.requests:
			switch {
			case !r.answered.CompareAndSwap(false, true):
			case r.pushed != nil:
				r.pushed.answer(context.Background(), wire.AnswerNotAllowed, rejectQueuedTimeout)
			default:
				s.mc.publish(context.Background(), wire.ResponseTopic(wire.AnswerNotAllowed, r.RID), rejectQueuedTimeout)
			}
		default:
			return
		}
	}
}

// dropQueued empties the queue of a closed client whose connection is
// gone: those requests came on a connection the hub has lost (or, during
// Close, has been told to end), and no other can answer them.
func (c *Client) dropQueued() {
	n := 0
	for {
		select {
		case r := <-c.requests:
			if r.pushed != nil {
				r.pushed.Close()
			}
			n++
		default:
			if n > 0 {
				c.log.Info("closed with no connection to answer on: dropped the stream requests waiting for Accept", "count", n)
			}
			return
		}
	}
}

// connect makes one connection attempt: a fresh token, a fresh connection,
// CONNECT and both subscriptions. ctx aborts the attempt, not the session.
func (c *Client) connect(ctx context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()

	// An X.509 device proves itself in the TLS handshake and sends no
	// password, as the Azure SDKs do.
	var password string
	if !c.cs.X509 {
		var err error
		if password, err = c.cs.Token(tokenTTL); err != nil {
			return nil, fmt.Errorf("device: signing a token: %w", err)
		}
	}
	s := &session{lost: make(chan struct{}), later: make(chan string, rejectBacklog), muxTLS: c.mqttTLS}
	s.muxURL, s.muxAddr = c.sessionTarget()

	nc, err := c.dialBroker(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("device: connecting to %s: %w", c.addr, ctx.Err())
		}
		return nil, dialError(c.addr, err)
	}
	// ctx aborts the handshake by closing the connection under it.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	mc, err := mqttConnect(ctx, nc, mqttOptions{
		clientID:  c.clientID,
		username:  c.username,
		password:  password,
		keepAlive: c.keepAlive,
		// keep-alive + ping timeout bounds how long a dead link (a NAT or
		// balancer that dropped it without a FIN) goes unnoticed: 30 s by
		// default.
		pingTimeout: min(10*time.Second, c.keepAlive),
		onPublish:   s.onPublish(c),
		onLost:      s.markLost,
		later:       s.later,
	})
	if err != nil {
		stop()
		nc.Close()
		var refused connackError
		switch {
		case ctx.Err() != nil:
			// Aborted or timed out: what the read saw is only a symptom.
			return nil, fmt.Errorf("device: connecting to %s: %w", c.addr, ctx.Err())
		case errors.As(err, &refused):
			return nil, c.connackError(refused)
		default:
			return nil, fmt.Errorf("device: MQTT handshake with %s failed: %w", c.addr, err)
		}
	}
	s.mc = mc
	s.up = time.Now()

	// Subscribe after every connect: with a clean session the hub forgets
	// subscriptions with the connection.
	filters := []string{wire.TopicRequestFilter, wire.TopicResponseFilter}
	codes, err := mc.subscribe(ctx, filters...)
	if err == nil && len(codes) != len(filters) {
		err = fmt.Errorf("SUBACK holds %d return codes for %d filters", len(codes), len(filters))
	}
	if err == nil {
		for i, code := range codes {
			if code >= 0x80 {
				err = fmt.Errorf("%w to %s", errSubscriptionRefused, filters[i])
				break
			}
		}
	}
	if err == nil && !stop() {
		err = ctx.Err() // ctx ended just as SUBACK arrived; the conn is closed or closing
	}
	if err != nil {
		stop()
		mc.disconnect(0)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("device: subscribing to stream requests: %w", err)
	}
	return s, nil
}

// dialBroker opens the network connection MQTT runs on.
func (c *Client) dialBroker(ctx context.Context) (net.Conn, error) {
	if c.dialHook != nil {
		return c.dialHook(ctx, c.dialBrokerReal)
	}
	return c.dialBrokerReal(ctx)
}

func (c *Client) dialBrokerReal(ctx context.Context) (net.Conn, error) {
	if c.transport == WebSocket {
		return dialWebSocket(ctx, c.addr, ws.Dialer{TLSConfig: c.mqttTLS})
	}
	d := tls.Dialer{Config: c.mqttTLS}
	return d.DialContext(ctx, "tcp", c.addr)
}

// dialError says plainly what went wrong, since the person reading it is
// often setting up a device by hand: a certificate problem reads as one.
func dialError(addr string, err error) error {
	if f, ok := certerr.Find(err); ok {
		return &hubCertError{addr: addr, f: f, err: err}
	}
	return fmt.Errorf("device: cannot reach the hub at %s: %w", addr, err)
}

// untrusted reports whether err is the hub's certificate failing
// verification.
func untrusted(err error) bool {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		ierr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &ierr)
}

func (c *Client) connackError(err connackError) error {
	switch err {
	case connackBadCredentials, connackNotAuthorized:
		// The hub that refused is the one dialed, which with Options.Hubs
		// is not the connection string's HostName. MQTT 3.1.1 gives no
		// reason, and a hub that does not go by the name the token was
		// signed for refuses it like a wrong key: say that name too.
		if c.cs.X509 {
			return fmt.Errorf("%w: the hub at %s refused device %q (%v); check its certificate (subject CN = device ID, within its validity, its thumbprint or CA registered), and that it is registered and enabled",
				ErrUnauthorized, c.addr, c.clientID, err)
		}
		return fmt.Errorf("%w: the hub at %s refused device %q (%v); check its key, and that it is registered and enabled; its token was signed for %q (the connection string's HostName), a name the hub must go by (tetherd --hostname)",
			ErrUnauthorized, c.addr, c.clientID, err, c.cs.HostName)
	default:
		return fmt.Errorf("device: the hub at %s refused the connection: %w", c.addr, err)
	}
}

// onMessage runs on the reader goroutine of session s's connection, one
// message at a time, so it must not block: it parses and queues, and
// leaves the reject of a request the queue has no room for to the
// connection's keep-alive goroutine (s.later), since a hub that does not
// read would hold the write, and with it every message after this one.
func (c *Client) onMessage(s *session, topic string) {
	// Topics are logged only up to the "?": the query holds the $auth token.
	path, _, _ := strings.Cut(topic, "?")
	if !strings.HasPrefix(topic, wire.TopicRequestPrefix) {
		c.log.Debug("ignoring message", "topic", path)
		return
	}
	sr, err := wire.ParseStreamRequest(topic)
	if err != nil {
		c.log.Warn("dropping malformed stream request", "topic", path, "err", err)
		return
	}
	r := &Request{Name: sr.Name, RID: sr.RID, URL: sr.URL, StreamID: bridgeStreamID(sr.URL), token: sr.Token, c: c}
	if sr.Mux {
		// This stream joins its URL; the next ones may come on the session.
		c.wantSession(s)
	}
	select {
	case c.requests <- r:
		c.log.Debug("stream request", "name", r.Name, "rid", r.RID)
		return
	default:
	}
	select {
	case s.later <- wire.ResponseTopic(wire.AnswerBusy, r.RID):
		c.log.Warn("too many stream requests waiting for Accept; rejecting", "name", r.Name, "rid", r.RID)
	default:
		c.log.Warn("too many stream requests waiting for Accept, and too many rejects waiting to go out; dropping it: the hub answers its service when the request times out", "name", r.Name, "rid", r.RID)
	}
}

// answer publishes a device's answer to a request on the live session.
func (c *Client) answer(ctx context.Context, status int, rid string) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	s := c.cur.Load()
	if s == nil || s.isLost() {
		return errNotConnected
	}
	return s.mc.publish(ctx, wire.ResponseTopic(status, rid), answerTimeout)
}
