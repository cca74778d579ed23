package broker

import (
	"errors"
	"net"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/internal/limit"
)

// Names of the per-source limits, as passed to Options.OnLimit: label
// values of the hub's tether_limited_total metric.
const (
	LimitConnsPerSource = "mqtt_conns_per_source"
	LimitConnRate       = "mqtt_conn_rate"
)

// errSourceRefused ends a connection refused for its source; the client
// got CONNACK "server unavailable" first.
var errSourceRefused = errors.New("broker: source over its connection limits")

// newSources builds the per-source table of opts. The burst is one
// second's worth of attempts, so a device fleet behind one NAT that
// reconnects at once after an outage is not refused outright.
func newSources(opts Options) *limit.Sources {
	return limit.NewSources(opts.MaxConnsPerSource, opts.ConnRatePerSource, int(opts.ConnRatePerSource))
}

// countSource counts conn against its source from accept until it logs in
// (s.unsource, called once it is authenticated) or ends, whichever comes
// first: connections that never send CONNECT count (those are what a
// slowloris holds), a device's session does not, so that a NAT of any
// size is served. It records on s whether the source is over its cap.
// The returned func uncounts it; calling it again does nothing.
func (b *Broker) countSource(s *session, conn net.Conn) (release func()) {
	var remote string
	if a := conn.RemoteAddr(); a != nil {
		remote = a.String()
	}
	s.src = limit.Source(remote)
	s.unsource, s.overConns = b.sources.Open(s.src)
	return s.unsource
}

// loggedIn stops counting s against its source: a device's session is no
// part of what MaxConnsPerSource bounds.
func (s *session) loggedIn() {
	if s.unsource != nil {
		s.unsource()
	}
}

// clientIDOf is the client id cl's CONNECT named, "" for none (mochi makes
// one up then).
func clientIDOf(cl *mqtt.Client) string {
	if cl.Properties.Props.AssignedClientID != "" {
		return ""
	}
	return cl.ID
}

// admitSource decides, at CONNECT and before any credential is looked at,
// whether the client may connect now: its source within its connections
// and its rate, and neither the source nor the client id in back-off
// after failed logins (Options.Admit). A refusal answers CONNACK 3, server
// unavailable (quota exceeded or connection rate exceeded in MQTT 5, with
// the reason in words): a device SDK retries later on it, where "not
// authorized" would tell it its credentials are wrong. It costs no
// storage read and no signature check.
func (b *Broker) admitSource(cl *mqtt.Client) error {
	s := sessionOf(cl)
	if s == nil {
		return nil
	}
	var (
		why, lim string
		code     = packets.ErrQuotaExceeded
	)
	switch {
	case s.overConns:
		why, lim = "too many connections from this address not logged in yet", LimitConnsPerSource
	case !b.sources.Allow(s.src):
		why, lim, code = "connecting too fast from this address", LimitConnRate, packets.ErrConnectionRateExceeded
	case b.opts.Admit != nil:
		if err := b.opts.Admit(clientIDOf(cl), cl.Net.Remote); err != nil {
			why = err.Error()
		}
	}
	if why == "" {
		return nil
	}
	if lim != "" && b.opts.OnLimit != nil {
		b.opts.OnLimit(lim, cl.Net.Remote)
	}
	b.refused(cl, why)
	if cl.Properties.ProtocolVersion < 5 {
		code = packets.ErrServerUnavailable // CONNACK 3 in MQTT 3.1.1
	} else {
		code.Reason = why // the reason string: mochi sends a code's Reason
	}
	if err := b.srv.SendConnack(cl, code, false, nil); err != nil {
		return err
	}
	return errSourceRefused
}
