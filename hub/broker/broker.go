// Package broker is the device control channel: an embedded MQTT broker
// (mochi-mqtt) that authenticates devices, lets them subscribe to their
// stream topics, sends each one its own stream requests and hands their
// answers back to the caller that is waiting for them.
//
// The broker owns no listeners: the binary accepts TLS connections and
// WebSocket upgrades and passes them in (ServeConn, Serve,
// HandleWebSocket), as derpserver does.
//
// Two rules keep one device from reading another's stream tokens, since
// every device subscribes to the same filter (wire.TopicRequestFilter):
// requests are written to the one device's connection and never published
// through the broker, and nothing a device publishes is ever delivered to
// anyone (answers are consumed, everything else is refused). Last-will
// messages are dropped at CONNECT for the same reason: mochi publishes
// them without an ACL check.
package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/internal/limit"
	"github.com/tether-io/tether/wire"
)

// Options configures a Broker. Authenticate is required; every other zero
// value means the default.
type Options struct {
	Logger *slog.Logger // nil: discard

	// Authenticate decides a CONNECT. clientID is the MQTT client id
	// ("{deviceId}" or "{deviceId}/{moduleId}"), password the SAS token. A
	// non-nil error refuses with CONNACK 5 (not authorized) and is logged
	// (rate-limited), so it must not quote the token. A CONNECT without a
	// client id is refused before Authenticate is asked. certs is the
	// chain the client presented in its TLS handshake (leaf first; nil
	// without one), over TLS and over WebSocket alike. The listeners only
	// request a certificate and never verify it: deciding whether it
	// proves anything is Authenticate's job.
	//
	// On success Authenticate returns the session's credential: a label of
	// what the device proved (which key, say), opaque to the broker, kept
	// with the session for Credential and DisconnectStale, so that a key
	// withdrawn later ends exactly the sessions opened with it.
	Authenticate func(clientID, username string, password []byte, remote string, certs []*x509.Certificate) (credential string, err error)

	// OnConnect is called when a device's session is up (after its
	// CONNACK). OnDisconnect is called when that client id's current
	// session ends; a session taken over by a newer connection with the
	// same client id ends without one, so for each id the calls alternate
	// (OnConnect may come twice in a row on a takeover, never OnDisconnect).
	//
	// Both run synchronously on the session's goroutine, ordered per
	// client id. They may call Connected, Disconnect and Clients, but
	// must not block for long or call Close.
	OnConnect    func(clientID string)
	OnDisconnect func(clientID string)
	// OnTakeover is called when a session past its CONNACK is taken
	// over: by a newer connection with its client id here, just before
	// that one's CONNACK, or through TakeOver. displaced and by are the
	// remote addresses of the replaced connection and of the new one. It
	// runs on the new connection's goroutine (TakeOver's caller's) and must
	// not block for long. May be nil.
	OnTakeover func(clientID, displaced, by string)

	// MaxWritesPending is mochi's per-client outbound queue
	// (caps.MaximumClientWritesPending). Default 64: a device gets one
	// small request at a time, and mochi's default of 8192 costs 64 KiB per
	// idle device.
	MaxWritesPending int

	// MaxConnsPerSource caps the connections one source (an IPv4 address,
	// an IPv6 /64) holds before they have logged in, counted from accept,
	// so those that never send CONNECT count; a connection stops counting
	// once its CONNECT is accepted. ConnRatePerSource caps the CONNECTs a
	// source makes a second. Past either the CONNECT is refused with
	// CONNACK 3 (server unavailable) before any credential is checked.
	// Zero or less: no cap.
	MaxConnsPerSource int
	ConnRatePerSource float64
	// Admit, when set, is asked at each CONNECT, before Authenticate,
	// whether clientID ("" for none) may try from remote now (the hub's
	// back-offs after failed logins). An error refuses with CONNACK 3 and
	// is logged like a refusal, its text the reason (MQTT 5: the CONNACK's
	// reason string).
	Admit func(clientID, remote string) error
	// OnLimit is called when a per-source cap refuses a CONNECT, with the
	// limit's name (LimitConnsPerSource, LimitConnRate) and the remote
	// address. May be nil.
	OnLimit func(limit, remote string)
}

// ErrNotConnected means that client id has no session on this node, or
// that it ended while a request waited for its answer.
var ErrNotConnected = errors.New("broker: device not connected")

// ErrInvalidRequest means a StreamRequest cannot be carried in a topic: its
// name or token holds a character the device would misparse.
var ErrInvalidRequest = errors.New("broker: invalid stream request")

const (
	// listenerTLS and listenerWS are the ids of mochi's stub listeners,
	// one per way in.
	listenerTLS = "tls"
	listenerWS  = "ws"

	defaultWritesPending = 64

	// maxPacketSize bounds what a client may send. mochi allocates a
	// packet's declared length before it is authenticated, and a device
	// only ever sends small packets.
	maxPacketSize = 64 << 10

	// connectTimeout bounds the TLS handshake and CONNECT, until mochi
	// sets the keepalive deadline. Without it an idle connection would
	// hold its goroutines for ever.
	connectTimeout = 20 * time.Second

	// writeTimeout bounds writing a stream request. A device that takes
	// longer to accept a few hundred bytes has stopped reading, and is
	// dropped.
	writeTimeout = 10 * time.Second

	// sysInterval is how often mochi refreshes its $SYS topics (nobody may
	// read them). Each refresh stops the world for runtime.ReadMemStats.
	sysInterval = 24 * 60 * 60

	callbackStripes = 64

	// readBufferSize is mochi's per-client read buffer, held for the
	// whole session (its default is 2 KiB). It only has to hold a fixed
	// header: mochi reads a packet's body into a buffer of its own, and
	// the TLS and WebSocket layers beneath it buffer a record or frame
	// already. A device sends little more than pings and short answers.
	readBufferSize = 256
)

var errWriteTimeout = errors.New("broker: writing to the device timed out")

// Broker is the embedded MQTT server. Create one with New.
//
// Lock order, outermost first: a client id's callback stripe (cb), then
// the hub's Server.mu, then mu. OnConnect and OnDisconnect run under the
// stripe, and they and OnTakeover take Server.mu; the hub, holding
// Server.mu, calls Disconnect, Credential and Remote, which take mu. mu is
// a leaf: under it the broker calls only DisconnectStale's stale, which
// must not call the broker, and reads a client's state; it stops
// connections and runs callbacks after letting it go. mochi calls the
// hooks holding none of its locks. Disconnect, DisconnectStale and
// TakeOver close a connection, which may write a goodbye (a WebSocket
// close frame, TLS close_notify) within a deadline; a WebSocket's write
// lock (wsConn.wmu) is only tried there, never waited for.
type Broker struct {
	opts           Options
	log            *slog.Logger
	srv            *mqtt.Server
	connectTimeout time.Duration // the constant, but tests shorten it
	writeTimeout   time.Duration // the constant, but tests shorten it

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeDone chan struct{} // closed when Close has finished
	closeErr  error

	// cb orders the OnConnect/OnDisconnect calls of one client id.
	cb     [callbackStripes]sync.Mutex
	cbSeed maphash.Seed

	refusals        sampler        // refused CONNECTs
	upgradeRefusals sampler        // refused WebSocket upgrades
	sources         *limit.Sources // connections and CONNECT rate per source (limits.go)

	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup         // everything Close waits for; Add only under mu while !closed
	current map[string]*session    // client id → its newest session
	pending map[string]*pendingReq // rid → waiting RequestStream
	up      int                    // current sessions past CONNACK
}

// session is one connection's MQTT session. Its fields are guarded by
// Broker.mu, except gone, and id and cl, which are set once before the
// session can be found in Broker.current and never change.
type session struct {
	gone chan struct{} // closed when the session ends

	id        string
	cl        *mqtt.Client // set once authenticated
	up        bool         // CONNACK sent
	announced bool         // OnConnect was the last callback for id (carried over on takeover)
	ended     bool
	replaced  *session // the session this one took over, if any

	tether    bool   // Tether's device SDK (DeviceClientType): told when taken over
	src       string // the source address, for per-source limits
	overConns bool   // the source held too many connections at accept
	unsource  func() // uncounts the connection from its source (limits.go)

	credential string // what Authenticate returned; set before id and cl
}

type pendingReq struct {
	sess   *session
	answer chan int // buffered 1; sent once, by whoever deletes the entry
}

// trackedConn carries its session to mochi's hooks, which only see the
// net.Conn they were given.
type trackedConn struct {
	net.Conn
	sess *session
}

// New builds the broker and starts its mochi server.
func New(opts Options) (*Broker, error) {
	if opts.Authenticate == nil {
		return nil, errors.New("broker: Options.Authenticate is required")
	}
	if opts.MaxWritesPending < 0 || opts.MaxWritesPending > math.MaxInt32 {
		return nil, fmt.Errorf("broker: MaxWritesPending %d out of range", opts.MaxWritesPending)
	}
	if opts.MaxWritesPending == 0 {
		opts.MaxWritesPending = defaultWritesPending
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = int32(opts.MaxWritesPending)
	caps.MaximumPacketSize = maxPacketSize
	// Nothing waits for an offline device, so a session never outlives
	// its connection; mochi would otherwise keep clean=false clients for
	// ever.
	caps.MaximumSessionExpiryInterval = 0

	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		opts:           opts,
		log:            log,
		connectTimeout: connectTimeout,
		writeTimeout:   writeTimeout,
		ctx:            ctx,
		cancel:         cancel,
		closeDone:      make(chan struct{}),
		cbSeed:         maphash.MakeSeed(),
		current:        make(map[string]*session),
		pending:        make(map[string]*pendingReq),
		sources:        newSources(opts),
	}
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities:            caps,
		Logger:                  slog.New(demoteHandler{log.Handler()}).With("component", "mochi"),
		SysTopicResendInterval:  sysInterval,
		ClientNetReadBufferSize: readBufferSize,
	})
	if err := b.srv.AddHook(&hook{b: b}, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("broker: adding hook: %w", err)
	}
	// Stub listeners, so that mochi's Close disconnects the clients of
	// both ways in: it closes its clients listener by listener, and only
	// those of a listener it knows. Close ends every connection itself
	// first.
	for _, id := range []string{listenerTLS, listenerWS} {
		if err := b.srv.AddListener(stubListener{id: id}); err != nil {
			cancel()
			return nil, fmt.Errorf("broker: adding listener %s: %w", id, err)
		}
	}
	if err := b.srv.Serve(); err != nil {
		cancel()
		_ = b.srv.Close()
		return nil, fmt.Errorf("broker: starting: %w", err)
	}
	return b, nil
}

// enter counts one more goroutine for Close to wait for, unless the broker
// is closed.
func (b *Broker) enter() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	return true
}

// ServeConn runs one MQTT session over an established connection (TLS
// already set up, or about to be by the first read) and returns when it
// ends. It closes conn.
func (b *Broker) ServeConn(conn net.Conn) {
	if !b.enter() {
		conn.Close()
		return
	}
	defer b.wg.Done()
	b.serveConn(conn, listenerTLS)
}

// serveConn is ServeConn for a caller that has already entered.
func (b *Broker) serveConn(conn net.Conn, listener string) {
	s := &session{gone: make(chan struct{})}
	defer b.countSource(s, conn)()

	// Close ends each connection from its own goroutine: a TLS or
	// WebSocket close may wait seconds for a stalled peer, and they should
	// not queue behind each other.
	closed := make(chan struct{})
	stop := context.AfterFunc(b.ctx, func() {
		defer close(closed)
		conn.Close()
	})
	defer func() {
		if !stop() {
			<-closed
		}
	}()

	_ = conn.SetDeadline(time.Now().Add(b.connectTimeout))
	err := b.srv.EstablishConnection(listener, &trackedConn{Conn: conn, sess: s})
	b.mu.Lock()
	authenticated := s.cl != nil
	b.mu.Unlock()
	if !authenticated {
		b.log.Debug("connection ended before a session", "listener", listener, "remote", conn.RemoteAddr(), "err", err)
	}
	// mochi skips its disconnect hook when a session fails between
	// authentication and CONNACK; end it here too (end is idempotent).
	b.end(s, err)
	conn.Close()
}

// Serve accepts connections from ln and serves each in its own goroutine.
// It returns nil once Close is called (which closes ln), or Accept's error
// if ln fails otherwise.
func (b *Broker) Serve(ln net.Listener) error {
	if !b.enter() {
		ln.Close()
		return nil
	}
	defer b.wg.Done()
	closed := make(chan struct{})
	stop := context.AfterFunc(b.ctx, func() {
		defer close(closed)
		ln.Close()
	})
	defer func() {
		if !stop() {
			<-closed
		}
	}()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if b.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: back off as
				// net/http does rather than spin or give up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				b.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-b.ctx.Done():
					t.Stop()
					return nil
				}
				continue
			}
			return fmt.Errorf("broker: accept: %w", err)
		}
		backoff = 0
		if !b.enter() {
			conn.Close()
			return nil
		}
		go func() {
			defer b.wg.Done()
			b.serveConn(conn, listenerTLS)
		}()
	}
}

// refusedUpgrade logs a refused MQTT-over-WebSocket upgrade with what the
// client offered, at most a few a second: a device that retries a handshake
// the hub can never accept is otherwise invisible to its operator.
func (b *Broker) refusedUpgrade(r *http.Request, why string) {
	if ok, dropped := b.upgradeRefusals.allow(); ok {
		b.log.Info("websocket upgrade refused", "remote", r.RemoteAddr, "why", why,
			"subprotocols", offered(r.Header.Values("Sec-WebSocket-Protocol")), "suppressed", dropped)
	}
}

// offered is the header's values with the token of a browser's bearer
// subprotocol (wire.SubprotocolBearerPrefix), sent here by mistake, cut
// out: a credential never reaches a log.
func offered(values []string) []string {
	out := make([]string, len(values))
	for i, v := range values {
		parts := strings.Split(v, ",")
		for j, p := range parts {
			if strings.HasPrefix(strings.TrimSpace(p), wire.SubprotocolBearerPrefix) {
				parts[j] = " " + wire.SubprotocolBearerPrefix + "…"
			}
		}
		out[i] = strings.TrimSpace(strings.Join(parts, ","))
	}
	return out
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// HandleWebSocket upgrades to MQTT over WebSocket (subprotocol "mqtt", in
// any letter case, required) and returns; the session goes on in a
// goroutine of its own, which Close waits for.
func (b *Broker) HandleWebSocket(w http.ResponseWriter, r *http.Request) {
	if !b.enter() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	c, proto, err := upgradeWS(w, r)
	if err != nil {
		b.wg.Done()
		b.refusedUpgrade(r, err.Error())
		return // the client has had its answer
	}
	if !isMQTT(proto) {
		_ = c.fail(ws.StatusPolicyViolation, nil)
		b.wg.Done()
		b.refusedUpgrade(r, "no MQTT subprotocol offered")
		return
	}
	var nc net.Conn = c
	if r.TLS != nil {
		// The TLS connection lies under the HTTP server, out of the
		// hook's reach: carry its client certificate along.
		nc = certConn{Conn: nc, certs: r.TLS.PeerCertificates}
	}
	// Returning lets net/http drop its connection state (request,
	// response buffers) and the handler's deep stack: an idle device
	// would otherwise keep both for the length of its session.
	go func() {
		defer b.wg.Done()
		b.serveConn(nc, listenerWS)
	}()
}

// RequestStream sends req to the device with that client id and waits for
// its answer, returning the status it gave (200 accepts, 400 rejects).
// RequestStream sets req.RID. It returns ErrNotConnected if the device has
// no session here or its session ends before it answers, and ctx.Err() if
// ctx ends first.
func (b *Broker) RequestStream(ctx context.Context, clientID string, req wire.StreamRequest) (status int, err error) {
	if err := validRequest(req); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	b.mu.Lock()
	s := b.current[clientID]
	if b.closed || s == nil || !s.up || s.ended || s.cl.Closed() {
		b.mu.Unlock()
		return 0, ErrNotConnected
	}
	rid := rand.Text()
	for b.pending[rid] != nil {
		rid = rand.Text()
	}
	p := &pendingReq{sess: s, answer: make(chan int, 1)}
	b.pending[rid] = p
	b.wg.Add(1) // for the writer below; allowed, b is not closed
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if b.pending[rid] == p {
			delete(b.pending, rid)
		}
		b.mu.Unlock()
	}()

	req.RID = rid
	// QoS 0, to this one client only, never through the broker's
	// subscriptions: every device subscribes to the same filter, and a
	// publish would hand this request's token to all of them. The write
	// runs apart so a stalled device cannot hold the caller past ctx.
	written := make(chan error, 1)
	go func() {
		defer b.wg.Done()
		written <- b.write(s, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish},
			TopicName:   req.Topic(),
		})
	}()

	for {
		select {
		case st := <-p.answer:
			return st, nil
		case err := <-written:
			if err != nil {
				return 0, fmt.Errorf("%w: sending the request: %v", ErrNotConnected, err)
			}
			written = nil
		case <-s.gone:
			// An answer that raced the disconnect still counts.
			select {
			case st := <-p.answer:
				return st, nil
			default:
			}
			return 0, ErrNotConnected
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// write writes pk to the session's client, dropping the device if the
// write stalls.
func (b *Broker) write(s *session, pk packets.Packet) error {
	t := time.AfterFunc(b.writeTimeout, func() {
		b.log.Warn("device not reading; disconnecting it", "client", s.id)
		s.cl.Stop(errWriteTimeout)
	})
	defer t.Stop()
	return s.cl.WritePacket(pk)
}

// validRequest rejects requests whose topic a device would split in the
// wrong places (see wire.StreamRequest.Topic): the name is one topic level
// free of MQTT wildcards, and every property must be exactly key=value.
func validRequest(r wire.StreamRequest) error {
	if err := wire.ValidateStreamName(r.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	switch {
	case r.Token == "" || strings.ContainsAny(r.Token, "=&/%+?#\x00") || !utf8.ValidString(r.Token):
		return fmt.Errorf("%w: token holds a reserved character", ErrInvalidRequest)
	case r.URL == "":
		return fmt.Errorf("%w: no URL", ErrInvalidRequest)
	}
	return nil
}

// Connected reports whether clientID has a session on this node.
func (b *Broker) Connected(clientID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.current[clientID]
	return s != nil && s.up && !s.ended && !s.cl.Closed()
}

// Tether reports whether clientID's session here is of Tether's device SDK
// (its username's DeviceClientType).
func (b *Broker) Tether(clientID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.current[clientID]
	return s != nil && s.tether
}

// Disconnect drops clientID's session, if it has one here. It does not
// wait for the session to end. A connection for that id still being
// authenticated is not affected: Authenticate must refuse it.
func (b *Broker) Disconnect(clientID string) {
	b.mu.Lock()
	s := b.current[clientID]
	b.mu.Unlock()
	if s != nil {
		// Stop closes the connection without taking the client's write
		// lock, which a stalled write may hold.
		s.cl.Stop(packets.ErrAdministrativeAction)
	}
}

// Credential is the credential Authenticate returned for clientID's
// current session here; ok is false when it has none.
func (b *Broker) Credential(clientID string) (credential string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.current[clientID]
	if s == nil || s.ended {
		return "", false
	}
	return s.credential, true
}

// DisconnectStale drops the sessions for which stale returns true, given
// each one's client id and credential, and returns how many. With
// clientIDs it looks at those ids' sessions only, otherwise at every
// session here. Like Disconnect it does not wait for them to end. stale
// runs under the broker's lock: it must be quick and must not call the
// broker.
func (b *Broker) DisconnectStale(stale func(clientID, credential string) bool, clientIDs ...string) int {
	var drop []*session
	check := func(s *session) {
		if s != nil && !s.ended && s.cl != nil && stale(s.id, s.credential) {
			drop = append(drop, s)
		}
	}
	b.mu.Lock()
	if len(clientIDs) > 0 {
		for _, id := range clientIDs {
			check(b.current[id])
		}
	} else {
		for _, s := range b.current {
			check(s)
		}
	}
	b.mu.Unlock()
	for _, s := range drop {
		s.cl.Stop(packets.ErrNotAuthorized)
	}
	return len(drop)
}

// Clients is the number of devices with a session on this node.
func (b *Broker) Clients() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.up
}

// Close disconnects every device, stops the broker and waits for every
// goroutine it started, including the sessions of ServeConn and
// HandleWebSocket and the accept loops of Serve (whose listeners it
// closes). Idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.closeDone
		return b.closeErr
	}
	b.closed = true
	b.mu.Unlock()

	b.cancel() // closes every connection and listener (see serveConn)
	b.wg.Wait()
	// No client is left, so mochi's own wait for its clients cannot race
	// with one still starting.
	b.closeErr = b.srv.Close()
	close(b.closeDone)
	return b.closeErr
}

// stripe is the callback lock of clientID.
func (b *Broker) stripe(clientID string) *sync.Mutex {
	return &b.cb[maphash.String(b.cbSeed, clientID)%callbackStripes]
}

// authenticated makes s the current session of its client id, just before
// mochi takes over any older session with that id and sends CONNACK. The
// old session, ending later, then finds it is no longer current and stays
// silent; if it was past its CONNACK, takenOver has told it why (Tether's
// SDK only) and reported it first.
func (b *Broker) authenticated(s *session, cl *mqtt.Client) {
	s.loggedIn()
	b.mu.Lock()
	s.id, s.cl = cl.ID, cl
	s.tether = wire.IsTetherClient(string(cl.Properties.Username))
	if s.ended {
		b.mu.Unlock()
		return
	}
	old := b.current[s.id]
	displaced := old != nil && old.up && !old.ended
	if old != nil {
		s.announced = old.announced
		s.replaced = old
		if old.up {
			b.up--
		}
	}
	b.current[s.id] = s
	b.mu.Unlock()
	if displaced {
		// Before mochi drops the old connection, so that the notice goes
		// out ahead of its close.
		b.takenOver(old, cl.Net.Remote)
	}
}

// established runs after CONNACK.
func (b *Broker) established(s *session) {
	mu := b.stripe(s.id)
	mu.Lock()
	defer mu.Unlock()
	b.mu.Lock()
	ok := !s.ended && b.current[s.id] == s
	if ok {
		s.up, s.announced = true, true
		b.up++
	}
	old := s.replaced
	s.replaced = nil
	b.mu.Unlock()
	if old != nil {
		// mochi has disconnected it already, unless its client map lost
		// track of it: a session ending as a newer one with its id comes
		// in deletes that one's entry by id, and the sweep of expired
		// sessions does too. One session per id must not depend on that,
		// and neither must what the displaced client reads: DISCONNECT,
		// then the close, as from mochi (a no-op if mochi did it).
		_ = b.srv.DisconnectClient(old.cl, packets.ErrSessionTakenOver)
		old.cl.Stop(packets.ErrSessionTakenOver)
	}
	if !ok {
		return
	}
	b.log.Debug("device connected", "client", s.id, "remote", s.cl.Net.Remote)
	if b.opts.OnConnect != nil {
		b.opts.OnConnect(s.id)
	}
}

// end runs when s's connection is done. Only the current session of a
// client id reports OnDisconnect, and only if OnConnect was reported for
// the id.
func (b *Broker) end(s *session, cause error) {
	b.mu.Lock()
	if s.ended || s.cl == nil {
		if !s.ended {
			s.ended = true
			close(s.gone)
		}
		b.mu.Unlock()
		return
	}
	id := s.id
	b.mu.Unlock()

	mu := b.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	b.mu.Lock()
	if s.ended {
		b.mu.Unlock()
		return
	}
	s.ended = true
	close(s.gone)
	notify := false
	if b.current[id] == s {
		delete(b.current, id)
		if s.up {
			b.up--
		}
		notify = s.announced
	}
	b.mu.Unlock()
	if !notify {
		b.log.Debug("session ended after a takeover", "client", id)
		return
	}
	b.log.Debug("device disconnected", "client", id, "cause", cause)
	if b.opts.OnDisconnect != nil {
		b.opts.OnDisconnect(id)
	}
}

// answer hands a device's answer to the RequestStream waiting for it. An
// answer to another session's request, or to none, is dropped: a device
// must not be able to answer for another.
func (b *Broker) answer(s *session, topic string) {
	status, rid, err := wire.ParseResponse(topic)
	if err != nil {
		b.log.Debug("malformed answer", "client", s.id, "err", err)
		return
	}
	b.mu.Lock()
	p := b.pending[rid]
	if p == nil || p.sess != s {
		b.mu.Unlock()
		b.log.Debug("answer to no request of this session", "client", s.id, "status", status)
		return
	}
	delete(b.pending, rid)
	b.mu.Unlock()
	p.answer <- status
}

// certConn is a connection whose TLS handshake happened elsewhere (the
// HTTP server's, for WebSocket), with the client certificate it carried.
type certConn struct {
	net.Conn
	certs []*x509.Certificate
}

func (c certConn) PeerCertificates() []*x509.Certificate { return c.certs }

// peerCertificates is the chain the client presented on conn, looking
// through wrappers. The handshake is complete when the hook asks: mochi
// has read the CONNECT packet through it.
func peerCertificates(conn net.Conn) []*x509.Certificate {
	for range 8 { // wrappers nest shallowly; never loop on a cycle
		switch c := conn.(type) {
		case interface{ ConnectionState() tls.ConnectionState }:
			return c.ConnectionState().PeerCertificates
		case interface{ PeerCertificates() []*x509.Certificate }:
			return c.PeerCertificates()
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return nil
		}
	}
	return nil
}
