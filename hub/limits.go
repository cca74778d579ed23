package hub

// The hub's Limits: what each one bounds, its default, how a zero or a
// negative value resolves, the names they are counted under, and the
// bound on a request body. The limiter that enforces them is in
// throttle.go, the TLS handshake's in tlslistener.go.

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	"github.com/tether-io/tether/hub/broker"
	"github.com/tether-io/tether/hub/relay"
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
	// PendingHandshakes caps the streams waiting for a side to connect,
	// and, counted apart, the streams of services' sessions being set up
	// (from their opening frame to their answer).
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

// Limits returns the hub's limits, defaults filled in; a limit that is
// off is -1 (0 for StreamIdleTimeout).
func (s *Server) Limits() Limits { return s.lim.l }

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
