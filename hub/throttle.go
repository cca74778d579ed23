package hub

// The limiter: the rate limits on new streams, the back-offs of failing
// logins (per identity at a source, and per source), and the counting and
// logging of every refusal or ending by a limit.

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
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

// burst is one second's worth of a rate, at least 1.
func burst(perSecond float64) int {
	return max(1, int(math.Min(perSecond, math.MaxInt32)))
}

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
func (s *Server) allowStream(a streamAnswer, remote, policy string) bool {
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
			l.hit(limitStreamRatePolicy, "stream request refused: too many new streams for one policy", "policy", policy, "remote", remote)
			a.throttled(time.Second, fmt.Sprintf("Too many new streams for policy %s (at most %g a second)", policy, l.l.StreamRatePerPolicy))
			return false
		}
	}
	if l.streams != nil && !l.streams.Allow() {
		l.hit(limitStreamRate, "stream request refused: too many new streams on this hub", "remote", remote)
		a.throttled(time.Second, fmt.Sprintf("Too many new streams on this hub (at most %g a second)", l.l.StreamRate))
		return false
	}
	return true
}

// streamLimited answers a stream the relay refused for one of its caps.
func (s *Server) streamLimited(a streamAnswer, err error) bool {
	var le *relay.LimitError
	if !errors.As(err, &le) {
		return false
	}
	a.throttled(time.Second, le.Error())
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
