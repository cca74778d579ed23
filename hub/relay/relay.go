// Package relay is the hub's streaming endpoint (/bridges/...): it hands
// out the two single-use tokens of a stream, holds whichever side arrives
// first until its peer comes or the handshake window ends, and then relays
// WebSocket frames between the two, frame by frame, until either side ends.
//
// Sides that offer the subprotocol tether-stream.v1 (Subprotocol) may
// half-close: an empty binary frame with FIN says "no more data from me",
// and the relay passes it on to a peer that speaks tether-stream.v1 too,
// while the other direction goes on. Toward a peer that does not (an Azure
// SDK), the marker ends the stream as a close would, since closing is the
// only end of stream such a peer knows.
//
// The relay owns no listener: the binary serves it as an http.Handler. It
// tracks the connections it hijacks itself, since http.Server.Shutdown does
// not, and Close ends them all.
package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/wire"
)

// Options configures a Relay. The zero value works.
type Options struct {
	Logger       *slog.Logger  // nil: discard
	Window       time.Duration // default handshake window when Open gets 0; default 60s
	WriteTimeout time.Duration // deadline on every write to a peer; default 60s
	OnDone       func(Info)    // called once per stream when it ends (paired or not); may be nil

	// Caps on streams open at once (waiting or paired), in all, per
	// device, and waiting for a side (pending handshakes); Open refuses
	// past them with a *LimitError. Zero or less: no cap.
	MaxStreams, MaxStreamsPerDevice, MaxPending int
	// MaxMessage caps a data message (all its fragments) from either
	// side: a frame header announcing more ends the stream, close 1009 to
	// the sender and 1001 to the other side. Zero or less: no cap.
	MaxMessage int64
	// IdleTimeout ends a paired stream once no data crossed it either way
	// for that long (close 1001 to both). Zero: never.
	IdleTimeout time.Duration
	// CloseTimeout is how long a side has to answer the hub's close frame
	// with its own before the hub closes the connection anyway (RFC 6455
	// §7.1.1: the server closes TCP once the close handshake is done).
	// Zero or less: 1s.
	CloseTimeout time.Duration
	// IdleHandler serves a request read on a reused stream connection
	// (tether-stream.v2) in place of the relay itself, so that the hub can
	// take its one-request stream opening there too; it must pass
	// /bridges/ requests to the relay. Nil: the relay serves them.
	IdleHandler http.Handler
	// OnLimit is called when a limit refuses a stream or ends one, with
	// the limit's name (Limit*) and what happened; may be nil.
	OnLimit func(limit, detail string)
	// Tap, when set, is asked for a Tap as each stream pairs; a nil Tap
	// leaves that stream alone. Nil: no stream is tapped.
	Tap func(Stream) Tap
}

// Stream is a stream opened on the relay: where its two sides connect and
// the tokens each must present.
type Stream struct {
	ID, DeviceID, Name string
	// ServiceToken and DeviceToken are single-use bearer tokens, one per
	// side, base32 (no characters that need escaping in a header, a URL or
	// an MQTT topic property).
	ServiceToken, DeviceToken string
	Expires                   time.Time // end of the handshake window
}

// Info describes a stream that ended, for logs and metrics.
type Info struct {
	ID, DeviceID, Name            string
	Opened, Paired, Closed        time.Time // Paired is zero when it never paired
	BytesToDevice, BytesToService int64     // payload bytes relayed each way
	// ClosedBy is "service" or "device" when that side closed, dropped or
	// failed (or sent the second of the two end-of-stream markers); "hub"
	// for Cancel, Close or a failed upgrade; "window" when the handshake
	// window ended before both sides came.
	ClosedBy string
	Reason   string
	PairedOK bool
	// HalfClosedBy is "service" or "device" when that side sent the first
	// end-of-stream marker, empty when no side half-closed.
	HalfClosedBy string
	// Recorded says the stream's Tap kept a recording of it (a Tap with a
	// Recorded method that says so: the hub's terminal recordings).
	Recorded bool
}

// Subprotocol is the WebSocket subprotocol of Tether's own clients
// (wsconn.Subprotocol): with it, an empty binary frame with FIN is the
// end-of-stream marker.
const Subprotocol = wire.SubprotocolStream

// SubprotocolReuse is tether-stream.v1 plus connection reuse: once a stream
// ended with a close frame each way, the connection is HTTP/1.1 again and
// may carry the next upgrade request, so a client of many streams pays one
// TLS handshake per connection rather than one per stream. The hub keeps
// such a connection for IdleConnTimeout between streams.
const SubprotocolReuse = wire.SubprotocolStreamReuse

// responseHeaderKey is the context key of WithResponseHeader.
type responseHeaderKey struct{}

// WithResponseHeader returns ctx carrying h, which ServeHTTP adds to its
// 101 answer: the hub's one-request stream opening answers with the
// headers of an accepted stream request.
func WithResponseHeader(ctx context.Context, h http.Header) context.Context {
	return context.WithValue(ctx, responseHeaderKey{}, h)
}

// IdleConnTimeout is how long the hub keeps a reusable connection with no
// stream on it. Clients keep theirs for less, so that the hub is never the
// one to close a connection a client is about to use.
const IdleConnTimeout = 90 * time.Second

// Values of Info.ClosedBy.
const (
	ClosedByService = "service"
	ClosedByDevice  = "device"
	ClosedByHub     = "hub"
	ClosedByWindow  = "window"
)

// ErrClosed is returned by Open after Close.
var ErrClosed = errors.New("relay: closed")

// ErrBadStream is returned by Open for an empty device ID or a stream name
// that cannot be a path segment.
var ErrBadStream = errors.New("relay: bad device ID or stream name")

const (
	defaultWindow       = 60 * time.Second
	defaultWriteTimeout = 60 * time.Second
	// closeTimeout bounds sending a close frame when a stream ends, so that
	// ending one side is prompt even when the other stopped reading.
	closeTimeout = time.Second
	// defaultCloseWait is Options.CloseTimeout's default.
	defaultCloseWait = time.Second
)

type side int

const (
	service side = iota
	device
)

func (s side) String() string {
	if s == service {
		return ClosedByService
	}
	return ClosedByDevice
}

// Relay is the streaming endpoint. Its methods are safe for concurrent use.
type Relay struct {
	log      *slog.Logger
	window   time.Duration
	wtimeout time.Duration
	// closeWait bounds waiting for a side's answer to the hub's close
	// frame.
	closeWait time.Duration
	onDone    func(Info)
	idleH     http.Handler // serves requests on reused conns
	// upgrader selects no subprotocol; tetherUpgrader selects Subprotocol.
	// Two, so that a request not offering Subprotocol goes through exactly
	// the handshake it always did: gobwas refuses a Sec-WebSocket-Protocol
	// header it cannot parse once a selector is set, and an Azure client's
	// handshake must not start failing because of this feature.
	upgrader       ws.HTTPUpgrader
	tetherUpgrader ws.HTTPUpgrader

	maxStreams, maxPerDevice, maxPending int
	maxMessage                           int64
	idle                                 time.Duration
	onLimit                              func(limit, detail string)
	tap                                  func(Stream) Tap

	mu      sync.Mutex
	closed  bool
	streams map[string]*stream
	// idle holds the reusable conns waiting for their next request, for
	// Close.
	idleConns map[*peer]struct{}
	tokens    map[string]tokenRef
	// perDevice and pending count the streams in streams by device and
	// those not yet paired, for the caps.
	perDevice map[string]int
	pending   int
	// wg counts every goroutine that may touch a hijacked conn: handlers
	// past authentication (they run the relay of a paired stream) and
	// window timers that fired. Adds happen under mu while !closed, so
	// Close's Wait never races an Add from zero.
	wg sync.WaitGroup
}

type tokenRef struct {
	st   *stream
	side side
}

// stream is the relay's state of one stream; guarded by Relay.mu.
type stream struct {
	Stream
	opened time.Time
	timer  *time.Timer
	peers  [2]*peer // upgraded and waiting for the other side
	ended  bool     // ended before pairing; OnDone already called or due
	pipe   *pipe    // set once paired
}

// New returns a Relay with opts, zero fields replaced by their defaults.
func New(opts Options) *Relay {
	r := &Relay{
		log:       opts.Logger,
		window:    opts.Window,
		wtimeout:  opts.WriteTimeout,
		onDone:    opts.OnDone,
		idleH:     opts.IdleHandler,
		streams:   make(map[string]*stream),
		tokens:    make(map[string]tokenRef),
		idleConns: make(map[*peer]struct{}),

		maxStreams:   opts.MaxStreams,
		maxPerDevice: opts.MaxStreamsPerDevice,
		maxPending:   opts.MaxPending,
		maxMessage:   opts.MaxMessage,
		idle:         opts.IdleTimeout,
		closeWait:    opts.CloseTimeout,
		onLimit:      opts.OnLimit,
		tap:          opts.Tap,
		perDevice:    make(map[string]int),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.window <= 0 {
		r.window = defaultWindow
	}
	if r.wtimeout <= 0 {
		r.wtimeout = defaultWriteTimeout
	}
	if r.closeWait <= 0 {
		r.closeWait = defaultCloseWait
	}
	r.upgrader = ws.HTTPUpgrader{Timeout: r.wtimeout}
	r.tetherUpgrader = ws.HTTPUpgrader{
		Timeout: r.wtimeout,
		// The client's order decides between the two: Tether's SDKs offer
		// v2 first.
		Protocol: func(p string) bool { return p == Subprotocol || p == SubprotocolReuse },
	}
	return r
}

// Open creates a stream for deviceID and name and its two tokens, valid
// for window (the relay's default window when 0). Past a cap on open
// streams it returns a *LimitError.
func (r *Relay) Open(deviceID, name string, window time.Duration) (*Stream, error) {
	if deviceID == "" || name == "" || strings.Contains(name, "/") {
		return nil, ErrBadStream
	}
	if window <= 0 {
		window = r.window
	}
	now := time.Now()
	st := &stream{
		Stream: Stream{
			ID:           rand.Text(),
			DeviceID:     deviceID,
			Name:         name,
			ServiceToken: rand.Text(),
			DeviceToken:  rand.Text(),
			Expires:      now.Add(window),
		},
		opened: now,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if err := r.admitLocked(deviceID); err != nil {
		r.limited(err.(*LimitError).Limit, "device "+deviceID)
		return nil, err
	}
	r.addLocked(st)
	r.tokens[st.ServiceToken] = tokenRef{st, service}
	r.tokens[st.DeviceToken] = tokenRef{st, device}
	st.timer = time.AfterFunc(window, func() { r.expire(st) })
	pub := st.Stream
	return &pub, nil
}

// Cancel ends a stream that will not pair (the device rejected it, or the
// request failed): its tokens stop working and a side already waiting is
// closed. A stream already paired is left alone.
func (r *Relay) Cancel(id string) {
	r.mu.Lock()
	st := r.streams[id]
	r.mu.Unlock()
	if st != nil {
		r.endUnpaired(st, ClosedByHub, "canceled", ws.StatusInternalServerError, "stream canceled")
	}
}

// expire ends a stream whose handshake window is over and is still
// unpaired.
func (r *Relay) expire(st *stream) {
	r.endUnpaired(st, ClosedByWindow, "peer did not connect within the handshake window",
		ws.StatusInternalServerError, "peer did not connect within the handshake window")
}

// endUnpaired ends st unless it paired or ended, or the relay closed, in
// the meantime: its tokens stop working, and a side waiting is sent a
// close frame with code and text. Close waits for it.
func (r *Relay) endUnpaired(st *stream, by, reason string, code ws.StatusCode, text string) {
	r.mu.Lock()
	if st.ended || st.pipe != nil || r.closed {
		r.mu.Unlock()
		return
	}
	r.wg.Add(1)
	defer r.wg.Done()
	waiting := r.endLocked(st)
	r.mu.Unlock()
	r.finishUnpaired(st, waiting, by, reason, code, text)
}

// endLocked marks an unpaired stream ended, forgets it and its tokens, and
// returns its waiting conns. r.mu is held.
func (r *Relay) endLocked(st *stream) []*peer {
	st.ended = true
	st.timer.Stop()
	r.removeLocked(st)
	delete(r.tokens, st.ServiceToken)
	delete(r.tokens, st.DeviceToken)
	var waiting []*peer
	for i, p := range st.peers {
		if p != nil {
			waiting = append(waiting, p)
			st.peers[i] = nil
		}
	}
	return waiting
}

// finishUnpaired closes the waiting sides of a stream that ended before
// pairing and reports it.
func (r *Relay) finishUnpaired(st *stream, waiting []*peer, by, reason string, code ws.StatusCode, text string) {
	for _, p := range waiting {
		r.closeUnpaired(p, ws.NewCloseFrameBody(code, text))
	}
	r.log.Debug("stream ended unpaired", "stream", st.ID, "device", st.DeviceID, "name", st.Name, "by", by, "reason", reason)
	r.done(Info{
		ID: st.ID, DeviceID: st.DeviceID, Name: st.Name,
		Opened: st.opened, Closed: time.Now(),
		ClosedBy: by, Reason: reason,
	})
}

func (r *Relay) done(info Info) {
	if r.onDone != nil {
		r.onDone(info)
	}
}

// Active returns the number of streams open, waiting or paired.
func (r *Relay) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.streams)
}

// Close ends every stream, waiting or paired, and waits for every goroutine
// the relay started (OnDone has been called for every stream when it
// returns). Later requests are answered 503. It is idempotent.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		return nil
	}
	r.closed = true
	type unpaired struct {
		st      *stream
		waiting []*peer
	}
	var ends []unpaired
	var pipes []*pipe
	for _, st := range r.streams {
		if st.pipe != nil {
			pipes = append(pipes, st.pipe)
			continue
		}
		ends = append(ends, unpaired{st, r.endLocked(st)})
	}
	r.mu.Unlock()
	for _, e := range ends {
		r.finishUnpaired(e.st, e.waiting, ClosedByHub, "hub closed", ws.StatusGoingAway, "hub shutting down")
	}
	bye := ws.NewCloseFrameBody(ws.StatusGoingAway, "hub shutting down")
	for _, p := range pipes {
		p.stop(ClosedByHub, "hub closed", [2][]byte{bye, bye})
	}
	r.closeIdle()
	r.wg.Wait()
	return nil
}

// ServeHTTP serves GET /bridges/{hub}/{deviceId}/{streamName}/{streamId}
// with a bearer token: it upgrades to WebSocket, then holds the conn until
// its peer arrives and relays between the two.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, deviceID, name, id, err := wire.ParseBridgePath(req.URL.EscapedPath())
	if err != nil {
		httpError(w, http.StatusBadRequest, wire.CodeBadRequest, "not a streaming endpoint path")
		return
	}
	token, ok := bearer(req.Header.Get("Authorization"))

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		httpError(w, http.StatusServiceUnavailable, wire.CodeServerError, "hub is shutting down")
		return
	}
	ref, found := r.tokens[token]
	st := ref.st
	if !ok || !found || st.ID != id || st.DeviceID != deviceID || st.Name != name ||
		st.ended || st.pipe != nil || !time.Now().Before(st.Expires) {
		r.mu.Unlock()
		// One answer whatever failed, so a prober learns nothing.
		r.log.Debug("stream auth failed", "stream", id, "remote", req.RemoteAddr)
		httpError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "Unauthorized")
		return
	}
	if req.Method != http.MethodGet || req.ProtoMajor != 1 || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		// Not a WebSocket request that can be hijacked (HTTP/2 cannot): keep
		// the token for the real one.
		r.mu.Unlock()
		httpError(w, http.StatusBadRequest, wire.CodeBadRequest, "WebSocket upgrade required")
		return
	}
	delete(r.tokens, token) // single use, from here on
	r.wg.Add(1)
	defer r.wg.Done()
	r.mu.Unlock()

	up := r.upgrader
	if offers(req.Header, Subprotocol) || offers(req.Header, SubprotocolReuse) {
		up = r.tetherUpgrader
	}
	if h, ok := req.Context().Value(responseHeaderKey{}).(http.Header); ok {
		up.Header = h
	}
	conn, rw, hs, err := up.Upgrade(req, w)
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		r.upgradeFailed(st, ref.side, err)
		return
	}
	p := newPeer(ref.side, conn, rw.Reader, r.wtimeout)
	p.tether = hs.Protocol == Subprotocol || hs.Protocol == SubprotocolReuse
	p.reuse = hs.Protocol == SubprotocolReuse
	// This handler's goroutine, already counted in wg, runs the relay.
	r.join(st, p)
}

// join makes p, upgraded, its side of st: it waits for the other side, or
// relays between the two until the stream ends when the other side was
// waiting. The caller is counted in wg.
func (r *Relay) join(st *stream, p *peer) {
	r.mu.Lock()
	if st.ended || r.closed {
		// Canceled, expired or shut down while upgrading.
		r.mu.Unlock()
		r.closeUnpaired(p, ws.NewCloseFrameBody(ws.StatusGoingAway, "stream ended"))
		return
	}
	other := st.peers[1-p.side]
	if other == nil {
		st.peers[p.side] = p
		r.mu.Unlock()
		r.log.Debug("stream side waiting", "stream", st.ID, "side", p.side.String())
		return
	}
	st.peers[1-p.side] = nil
	st.timer.Stop()
	pp := &pipe{r: r, st: st, paired: time.Now()}
	pp.peers[p.side] = p
	pp.peers[other.side] = other
	st.pipe = pp
	r.pending--
	r.mu.Unlock()
	r.runPipe(pp)
}

// runPipe relays until pp's stream ends and reports it. The caller is
// counted in wg.
func (r *Relay) runPipe(pp *pipe) {
	st := pp.st
	info := pp.run()

	r.mu.Lock()
	r.removeLocked(st)
	r.mu.Unlock()
	// Before OnDone: when a stream is reported, its conns are closed or
	// waiting for their next request.
	r.reuseOrClose(pp.peers[:])
	r.done(info)
}

// upgradeFailed ends a stream one of whose sides failed to upgrade: its
// token is spent, so the stream can never pair.
func (r *Relay) upgradeFailed(st *stream, s side, err error) {
	r.log.Debug("stream upgrade failed", "stream", st.ID, "side", s.String(), "err", err)
	r.endUnpaired(st, ClosedByHub, s.String()+" upgrade failed: "+err.Error(),
		ws.StatusInternalServerError, "peer failed to connect")
}

// offers reports whether the Sec-WebSocket-Protocol headers of h list
// proto. Subprotocol names compare exactly (RFC 6455 §4.1).
func offers(h http.Header, proto string) bool {
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) == proto {
				return true
			}
		}
	}
	return false
}

// bearer returns the token of an "Authorization: Bearer {token}" header.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func httpError(w http.ResponseWriter, status, code int, msg string) {
	h := w.Header()
	h.Set(wire.HeaderErrorCode, wire.CodeName(code))
	h.Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(wire.EncodeError(code, msg))
}

// closeUnpaired ends the connection of a side that will never pair: a
// close frame with body, then awaitClose.
func (r *Relay) closeUnpaired(p *peer, body []byte) {
	p.closing(closeTimeout)
	p.writeClose(body)
	r.awaitClose(p)
}

// awaitClose waits, on a goroutine of its own that Close waits for, until
// p answers the close frame the hub sent it or the close timeout passes,
// then closes p's conn. A p that was sent no close frame is closed at once,
// and so is every p once the relay is closed: shutting down does not wait.
func (r *Relay) awaitClose(p *peer) {
	r.mu.Lock()
	if r.closed || !p.sentClose.Load() || p.bad.Load() {
		r.mu.Unlock()
		p.hardClose()
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		p.conn.SetReadDeadline(time.Now().Add(r.closeWait))
		p.drain()
		p.close()
	}()
}
