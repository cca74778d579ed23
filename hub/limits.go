package hub

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/tether-io/tether/internal/batchconn"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tether-io/tether/hub/broker"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/internal/limit"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// Limits keep one client, one device or one address from taking the hub
// for itself. In Options, a zero field means its default (DefaultLimits)
// and a negative one turns that limit off. Over a limit the hub answers
// 429 ThrottlingException (REST) or CONNACK 3, server unavailable (MQTT),
// counts it in tether_limited_total{limit}, logs it at most once per
// limit every 10 seconds, and leaves everything else as it was.
type Limits struct {
	// StreamsPerDevice and StreamsPerHub cap the streams open at once
	// (waiting for a side or relaying) to one device and on this node.
	StreamsPerDevice int
	StreamsPerHub    int
	// StreamRate and StreamRatePerPolicy cap the new streams a second on
	// this node and per access policy (token buckets, a second's worth of
	// burst).
	StreamRate          float64
	StreamRatePerPolicy float64
	// PendingHandshakes caps the streams waiting for a side to connect.
	PendingHandshakes int

	// MQTTConnsPerSource caps the MQTT connections (over TLS and over
	// WebSocket) one source address holds before they have logged in (a
	// device's session does not count, so a NAT of any size is served),
	// and MQTTConnRatePerSource the CONNECTs it makes a second (burst one
	// second's worth). A source is an IPv4 address or an IPv6 /64. Both
	// defaults are meant for a factory or a carrier's NAT of thousands of
	// devices on one address; the per-identity back-off (AuthFailures) is
	// what stops a failing device.
	MQTTConnsPerSource    int
	MQTTConnRatePerSource float64

	// MaxHeaderBytes bounds a request's header (the binary sets it on its
	// http.Server; past it net/http answers 431). MaxBodyBytes bounds a
	// request body the hub reads (413 past it).
	MaxHeaderBytes int
	MaxBodyBytes   int64
	// MaxMessageBytes bounds a WebSocket message on a stream: a frame
	// taking a message past it ends the stream, close 1009 to its sender.
	MaxMessageBytes int64
	// StreamIdleTimeout ends a stream over which no data crossed either
	// way for that long. Off by default: an idle SSH session is normal.
	StreamIdleTimeout time.Duration
	// StreamCloseTimeout is how long a stream's side has, once the stream
	// ended, to answer the hub's close frame with its own before the hub
	// closes its connection anyway (the WebSocket close handshake).
	StreamCloseTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake on the listeners
	// TLSListener wraps. (The MQTT CONNECT has its own 20 s bound.)
	TLSHandshakeTimeout time.Duration
	// HeaderTimeout bounds the time a client has to send a request's
	// header once its connection is up, so that one sending a byte now and
	// then (slowloris) holds nothing for long. The binary sets it as its
	// http.Server's ReadHeaderTimeout; -1 there means none.
	HeaderTimeout time.Duration

	// AuthFailures is how many logins (REST or MQTT) one identity (a
	// device by its client id, an access policy by its name) may fail in
	// a row from one source before that identity is refused there, for
	// 1 s, then twice as long after each further failure, at most
	// AuthBackoffMax. A success resets it. The other identities of that
	// source, and the same identity from elsewhere, are not touched: a
	// deleted device retrying behind a NAT does not lock out its
	// neighbours, and nobody can lock a device out from another address.
	AuthFailures   int
	AuthBackoffMax time.Duration
	// AuthFailureRatePerSource is how many unsuccessful logins a second
	// (failed, or refused by the per-identity back-off) one source may
	// make, with a burst of one second's worth, before the whole source is
	// refused: every login, and new TLS handshakes past a small allowance,
	// for 1 s, twice as long each time it goes on failing as fast, at
	// most AuthBackoffMax. It stops a flood that names a new identity each
	// time, which the per-identity back-off never sees twice.
	AuthFailureRatePerSource float64
}

// DefaultLimits are the limits of a hub whose Options leave them zero:
// far above what a well-behaved fleet does, far below what exhausts a node.
func DefaultLimits() Limits {
	return Limits{
		StreamsPerDevice:      100,
		StreamsPerHub:         10_000,
		StreamRate:            2_000,
		StreamRatePerPolicy:   500,
		PendingHandshakes:     5_000,
		MQTTConnsPerSource:    10_000,
		MQTTConnRatePerSource: 1_000,
		MaxHeaderBytes:        32 << 10,
		MaxBodyBytes:          64 << 10,
		MaxMessageBytes:       16 << 20,
		StreamIdleTimeout:     0, // off
		StreamCloseTimeout:    time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		HeaderTimeout:         10 * time.Second,
		AuthFailures:          10,
		AuthBackoffMax:        time.Minute,
		// docs/security.md ("Why 30 a second") explains the figure: some
		// 450 devices failing for good behind one address at their
		// agents' pace, and a quarter of the benchmark flood's rate per
		// address.
		AuthFailureRatePerSource: 30,
	}
}

// resolve replaces zero fields by their defaults and negative ones by -1
// (off), so that every user of a field only asks "> 0".
func (l Limits) resolve() Limits {
	d := DefaultLimits()
	pick := func(v, def float64) float64 {
		switch {
		case v < 0:
			return -1
		case v == 0:
			return def
		}
		return v
	}
	l.StreamsPerDevice = int(pick(float64(l.StreamsPerDevice), float64(d.StreamsPerDevice)))
	l.StreamsPerHub = int(pick(float64(l.StreamsPerHub), float64(d.StreamsPerHub)))
	l.StreamRate = pick(l.StreamRate, d.StreamRate)
	l.StreamRatePerPolicy = pick(l.StreamRatePerPolicy, d.StreamRatePerPolicy)
	l.PendingHandshakes = int(pick(float64(l.PendingHandshakes), float64(d.PendingHandshakes)))
	l.MQTTConnsPerSource = int(pick(float64(l.MQTTConnsPerSource), float64(d.MQTTConnsPerSource)))
	l.MQTTConnRatePerSource = pick(l.MQTTConnRatePerSource, d.MQTTConnRatePerSource)
	l.MaxHeaderBytes = int(pick(float64(l.MaxHeaderBytes), float64(d.MaxHeaderBytes)))
	l.MaxBodyBytes = int64(pick(float64(l.MaxBodyBytes), float64(d.MaxBodyBytes)))
	l.MaxMessageBytes = int64(pick(float64(l.MaxMessageBytes), float64(d.MaxMessageBytes)))
	if l.StreamIdleTimeout < 0 {
		l.StreamIdleTimeout = 0
	}
	if l.StreamCloseTimeout <= 0 {
		l.StreamCloseTimeout = d.StreamCloseTimeout
	}
	l.TLSHandshakeTimeout = time.Duration(pick(float64(l.TLSHandshakeTimeout), float64(d.TLSHandshakeTimeout)))
	l.HeaderTimeout = time.Duration(pick(float64(l.HeaderTimeout), float64(d.HeaderTimeout)))
	l.AuthFailures = int(pick(float64(l.AuthFailures), float64(d.AuthFailures)))
	l.AuthBackoffMax = time.Duration(pick(float64(l.AuthBackoffMax), float64(d.AuthBackoffMax)))
	l.AuthFailureRatePerSource = pick(l.AuthFailureRatePerSource, d.AuthFailureRatePerSource)
	return l
}

// Names of the limits the hub itself enforces; the relay's and the
// broker's are in those packages. All are values of the limit label.
const (
	limitStreamRate       = "stream_rate"
	limitStreamRatePolicy = "stream_rate_policy"
	limitAuthBackoff      = "auth_backoff" // one identity from one source
	limitAuthBackoffSrc   = "auth_backoff_source"
	limitBodySize         = "body_size"
	limitTLSHandshake     = "tls_handshake"
)

var limitNames = []string{
	relay.LimitStreamsPerDevice, relay.LimitStreamsPerHub, relay.LimitPendingHandshakes,
	limitStreamRate, limitStreamRatePolicy,
	broker.LimitConnsPerSource, broker.LimitConnRate, limitAuthBackoff, limitAuthBackoffSrc,
	limitBodySize, relay.LimitMessageSize, relay.LimitIdleTimeout, limitTLSHandshake,
}

// limiter is the hub's state behind its Limits.
type limiter struct {
	l       Limits // resolved
	log     *slog.Logger
	streams *rate.Limiter // nil: no hub-wide rate
	// ident backs off an identity at one source (loginKey), by failures
	// in a row; addr a whole source, by its rate of unsuccessful logins.
	ident, addr *limit.Backoff
	// shakes is the TLS handshakes a second a source in back-off still
	// gets (see TLSListener); it is asked only while a source is in
	// back-off.
	shakes *limit.Sources
	// dummyKey signs nothing: an attempt naming an unknown device or
	// policy verifies its token against it, so that it costs what a wrong
	// key for a known one costs and its timing tells nothing.
	dummyKey string
	counted  *prometheus.CounterVec

	mu       sync.Mutex
	policies map[string]*rate.Limiter // by policy name; policies are few
	logs     map[string]*logLimiter   // by limit name
}

func newLimiter(opts Limits, log *slog.Logger) *limiter {
	l := opts.resolve()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	lim := &limiter{
		l:        l,
		log:      log,
		ident:    limit.NewBackoff(l.AuthFailures, time.Second, l.AuthBackoffMax),
		addr:     limit.NewRateBackoff(l.AuthFailureRatePerSource, burst(l.AuthFailureRatePerSource), time.Second, l.AuthBackoffMax),
		shakes:   limit.NewSources(0, backedOffHandshakeRate, backedOffHandshakeBurst),
		dummyKey: base64.StdEncoding.EncodeToString(key),
		counted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_limited_total",
			Help: "Requests, connections and streams refused or ended by a limit, by limit (the reason).",
		}, []string{"limit"}),
		policies: make(map[string]*rate.Limiter),
		logs:     make(map[string]*logLimiter),
	}
	if l.StreamRate > 0 {
		lim.streams = rate.NewLimiter(rate.Limit(l.StreamRate), burst(l.StreamRate))
	}
	for _, n := range limitNames {
		lim.counted.WithLabelValues(n) // present at zero, so rate() works from the start
	}
	return lim
}

// A source in back-off after failed logins may still start this many TLS
// handshakes a second (and this many at once) on the hub's TLS listeners;
// past them its connections are closed before the handshake. Its logins
// are refused anyway (429, CONNACK 3) before their token is looked at, but
// the handshake in front of that refusal is the dearest part of an
// attempt: a flood of failing logins must not cost the hub a handshake
// each. The allowance lets the few connections that would pass in back-off
// (a device's stream over /bridges/ from an address it shares with a
// failing device, a probe) through, unless their address floods. It is
// small: Tether's own clients reuse their connections, and an address
// enters back-off only when its logins keep failing (a success resets
// the count). At 5 a second, 8 flooding addresses still got 40 handshakes
// a second, most of what the flood cost the hub (docs/benchmarks.md §7).
const (
	backedOffHandshakeRate  = 1
	backedOffHandshakeBurst = 3
)

// refuseBeforeTLS reports whether a new connection from remote is closed
// before its TLS handshake: its source is in back-off and over its
// handshake allowance. It costs two map lookups.
func (l *limiter) refuseBeforeTLS(remote string) bool {
	src := limit.Source(remote)
	if l.addr.Wait(src, time.Now()) <= 0 || l.shakes.Allow(src) {
		return false
	}
	l.hit(limitAuthBackoffSrc, "connection closed before TLS: too many failed logins from its address", "remote", remote)
	return true
}

// burst is one second's worth of a rate, at least 1.
func burst(perSecond float64) int {
	return max(1, int(math.Min(perSecond, math.MaxInt32)))
}

// Limits returns the hub's limits, defaults filled in; a limit that is
// off is -1 (0 for StreamIdleTimeout).
func (s *Server) Limits() Limits { return s.lim.l }

// hit counts one refusal or ending by a limit and logs it, at most once
// per limit every 10 seconds (the next line says how many were held back).
func (l *limiter) hit(name, msg string, args ...any) {
	l.counted.WithLabelValues(name).Inc()
	l.mu.Lock()
	ll := l.logs[name]
	if ll == nil {
		ll = newLogLimiter(1, 10*time.Second)
		l.logs[name] = ll
	}
	l.mu.Unlock()
	ll.log(l.log, slog.LevelWarn, msg, append([]any{"limit", name}, args...)...)
}

// writeThrottled answers 429 ThrottlingException, Azure's answer to a
// quota, with a Retry-After in whole seconds.
func writeThrottled(w http.ResponseWriter, retry time.Duration, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(retry)))
	writeError(w, http.StatusTooManyRequests, wire.CodeThrottled, msg)
}

// retrySeconds is a wait in whole seconds, rounded up, at least 1.
func retrySeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// allowStream takes one new stream from the policy's and the hub's
// buckets, answering 429 when either is empty.
func (s *Server) allowStream(w http.ResponseWriter, r *http.Request, policy string) bool {
	l := s.lim
	if l.l.StreamRatePerPolicy > 0 {
		l.mu.Lock()
		pl := l.policies[policy]
		if pl == nil {
			pl = rate.NewLimiter(rate.Limit(l.l.StreamRatePerPolicy), burst(l.l.StreamRatePerPolicy))
			l.policies[policy] = pl
		}
		l.mu.Unlock()
		if !pl.Allow() {
			l.hit(limitStreamRatePolicy, "stream request refused: too many new streams for one policy", "policy", policy, "remote", r.RemoteAddr)
			writeThrottled(w, time.Second, fmt.Sprintf("Too many new streams for policy %s (at most %g a second)", policy, l.l.StreamRatePerPolicy))
			return false
		}
	}
	if l.streams != nil && !l.streams.Allow() {
		l.hit(limitStreamRate, "stream request refused: too many new streams on this hub", "remote", r.RemoteAddr)
		writeThrottled(w, time.Second, fmt.Sprintf("Too many new streams on this hub (at most %g a second)", l.l.StreamRate))
		return false
	}
	return true
}

// streamLimited answers a stream the relay refused for one of its caps.
func (s *Server) streamLimited(w http.ResponseWriter, err error) bool {
	var le *relay.LimitError
	if !errors.As(err, &le) {
		return false
	}
	writeThrottled(w, time.Second, le.Error())
	return true
}

// relayLimited counts what the relay refused or ended.
func (s *Server) relayLimited(name, detail string) {
	s.lim.hit(name, "stream limit reached", "detail", detail)
}

// brokerLimited counts the CONNECTs the broker refused for their source.
func (s *Server) brokerLimited(name, remote string) {
	why := name
	switch name {
	case broker.LimitConnsPerSource:
		why = fmt.Sprintf("more than %d connections from its address not logged in yet", s.lim.l.MQTTConnsPerSource)
	case broker.LimitConnRate:
		why = fmt.Sprintf("more than %g CONNECTs a second from its address", s.lim.l.MQTTConnRatePerSource)
	}
	s.lim.hit(name, "device connection refused", "why", why, "remote", remote)
}

// throttled is what a login refused by a back-off is told: whose failures
// ("for device dev1", "from 192.0.2.7") and when to try again.
func throttled(whose string, wait time.Duration) string {
	return fmt.Sprintf("throttled: too many failed logins %s; retry in %ds", whose, retrySeconds(wait))
}

// Identities of the per-identity back-off, as its messages name them.
// A name is cut at maxIdentityName bytes (a device id and a module id
// with their slash, the longest a real one is) so that a flood of long
// made-up names cannot swell the table.
func deviceIdentity(clientID string) string {
	if clientID == "" {
		return ""
	}
	return "device " + clientID[:min(len(clientID), maxIdentityName)]
}

const maxIdentityName = 2*128 + 1

// policyIdentity names the policy a service token names in its skn field,
// "" for none. The token need not be well formed otherwise: a garbled
// signature is a failed login of that policy all the same.
func policyIdentity(authorization string) string {
	for field := range strings.SplitSeq(authorization, "&") {
		if i := strings.Index(field, "skn="); i >= 0 && (i == 0 || field[i-1] == ' ') {
			name := field[i+len("skn="):]
			if dec, err := url.QueryUnescape(name); err == nil {
				name = dec
			}
			if name == "" {
				return ""
			}
			return "policy " + name[:min(len(name), maxIdentityName)]
		}
	}
	return ""
}

// loginKey is identity at src in the per-identity back-off.
func loginKey(identity, src string) string { return src + " " + identity }

// refuseLogin decides, before any credential is looked at, whether a
// login naming identity ("" when it names none) from remote is refused
// for earlier failures: its source's, then the identity's at that source.
// A refusal is counted, logged, and returned as its message and how long
// to wait; "" lets the login go on. A refusal for the identity counts
// against the source as a failure would: a client that keeps trying one
// throttled identity as fast as it can is a flood.
func (l *limiter) refuseLogin(identity, remote string) (msg string, wait time.Duration) {
	now := time.Now()
	src := limit.Source(remote)
	if wait = l.addr.Wait(src, now); wait > 0 {
		msg = throttled("from "+src, wait)
		l.hit(limitAuthBackoffSrc, "login refused", "why", msg, "remote", remote)
		return msg, wait
	}
	if identity == "" {
		return "", 0
	}
	if wait = l.ident.Wait(loginKey(identity, src), now); wait > 0 {
		l.addr.Failed(src, now)
		msg = throttled("for "+identity, wait)
		l.hit(limitAuthBackoff, "login refused", "why", msg, "remote", remote)
		return msg, wait
	}
	return "", 0
}

// loginResult feeds one login's outcome into both back-offs.
func (l *limiter) loginResult(identity, remote string, ok bool) {
	now := time.Now()
	src := limit.Source(remote)
	if identity != "" {
		if ok {
			l.ident.Succeeded(loginKey(identity, src))
		} else {
			l.ident.Failed(loginKey(identity, src), now)
		}
	}
	if !ok {
		l.addr.Failed(src, now)
	}
}

// backedOff answers 429 to a REST call carrying a SAS token whose source,
// or whose policy at that source, is in back-off after failed logins,
// before its signature is looked at: that is what makes a flood of bad
// tokens cheap. Other requests (streaming endpoint, MQTT over WebSocket,
// probes) pass.
func (s *Server) backedOff(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	if !hasPrefixFold(auth, "SharedAccessSignature") {
		return false
	}
	msg, wait := s.lim.refuseLogin(policyIdentity(auth), r.RemoteAddr)
	if msg == "" {
		return false
	}
	writeThrottled(w, wait, msg)
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// admitDevice is the broker's Admit: a device whose source, or whose
// client id at that source, is in back-off is refused before its
// CONNECT's credentials are looked at.
func (s *Server) admitDevice(clientID, remote string) error {
	if msg, _ := s.lim.refuseLogin(deviceIdentity(clientID), remote); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// authResult feeds the outcome of a REST call's token check into the
// back-offs, under the token's policy.
func (s *Server) authResult(r *http.Request, ok bool) {
	s.lim.loginResult(policyIdentity(r.Header.Get("Authorization")), r.RemoteAddr, ok)
}

// burn verifies tok against a key nobody holds, for an attempt that names
// no device or policy of this hub: it fails as a wrong key would, at the
// same cost.
func (s *Server) burn(tok sas.Token) {
	_ = verifyEither(tok, s.lim.dummyKey, s.lim.dummyKey)
}

// readBody reads a request body of at most Limits.MaxBodyBytes. Past it,
// it answers 413 and returns false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	max := s.lim.l.MaxBodyBytes
	if max <= 0 {
		max = math.MaxInt64
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		s.lim.hit(limitBodySize, "request refused: body too large", "remote", r.RemoteAddr, "path", r.URL.Path)
		writeError(w, http.StatusRequestEntityTooLarge, wire.CodeBadRequest, fmt.Sprintf("Request body larger than %d bytes", max))
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "reading the request body failed")
		return nil, false
	}
	return body, true
}

// TLSListener serves TLS over ln with the hub's handshake time limit
// (Limits.TLSHandshakeTimeout): each connection shakes hands on a
// goroutine of its own under a deadline, which is cleared once done, and
// only then does Accept return it, as a *tls.Conn. A client that opens
// connections and sends nothing, or a byte a minute, holds a goroutine for
// the limit at most and never delays another client. A connection from a
// source in login back-off beyond its handshake allowance
// (backedOffHandshakeRate) is closed at once, before any handshake.
func (s *Server) TLSListener(ln net.Listener, conf *tls.Config) net.Listener {
	l := &handshakeListener{
		Listener: ln,
		conf:     conf,
		timeout:  s.lim.l.TLSHandshakeTimeout,
		refuse:   s.lim.refuseBeforeTLS,
		conns:    make(chan net.Conn),
		errs:     make(chan error),
		done:     make(chan struct{}),
		failed:   make(chan struct{}),
		shaking:  make(map[net.Conn]struct{}),
		onTimeout: func(remote string) {
			s.lim.hit(limitTLSHandshake, "TLS handshake timed out", "remote", remote)
		},
	}
	go l.accept()
	return l
}

type handshakeListener struct {
	net.Listener
	conf      *tls.Config
	timeout   time.Duration
	onTimeout func(remote string)
	refuse    func(remote string) bool // nil: refuse none

	conns  chan net.Conn
	errs   chan error    // temporary Accept errors, passed on one by one
	done   chan struct{} // closed by Close
	failed chan struct{} // closed when the inner listener failed for good
	ferr   error         // why; written before failed is closed
	once   sync.Once

	mu      sync.Mutex
	closed  bool
	shaking map[net.Conn]struct{} // raw conns in their handshake, closed by Close
}

func (l *handshakeListener) accept() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var t interface{ Temporary() bool }
			var ne net.Error
			if errors.As(err, &t) && t.Temporary() || errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: the server backs
				// off and calls Accept again.
				select {
				case l.errs <- err:
					continue
				case <-l.done:
					return
				}
			}
			l.ferr = err
			close(l.failed)
			return
		}
		if l.refuse != nil && c.RemoteAddr() != nil && l.refuse(c.RemoteAddr().String()) {
			// A reset, not a FIN: nothing was said on this connection,
			// and a flood of them then leaves no TIME_WAIT sockets behind
			// and half the packets to handle.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return
		}
		l.shaking[c] = struct{}{}
		l.mu.Unlock()
		go l.handshake(c)
	}
}

func (l *handshakeListener) handshake(c net.Conn) {
	// Beneath the TLS layer a batchconn lets the relay send a frame's
	// records in one write (see internal/batchconn).
	tc := tls.Server(batchconn.New(c), l.conf)
	if l.timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(l.timeout))
	}
	err := tc.Handshake()
	l.mu.Lock()
	delete(l.shaking, c)
	closed := l.closed
	l.mu.Unlock()
	if err != nil || closed {
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() && !closed {
			l.onTimeout(c.RemoteAddr().String())
		}
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case l.conns <- tc:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection whose handshake is done.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.failed:
		return nil, l.ferr
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and ends the handshakes in progress.
func (l *handshakeListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		l.closed = true
		for c := range l.shaking {
			c.Close()
		}
		l.mu.Unlock()
	})
	return l.Listener.Close()
}
