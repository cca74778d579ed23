package main

import (
	"flag"
	"time"

	"github.com/tether-io/tether/hub"
)

// addLimitFlags registers a flag for each of the hub's limits, defaulting
// to hub.DefaultLimits, on fs, and returns their names for the help. Every
// limit is off at 0 or less, the way an operator reads "--max-streams 0"
// (but --auth-backoff-max, for which 0 is the default). The returned
// finish, called after fs.Parse, fills in l.
func addLimitFlags(fs *flag.FlagSet, l *hub.Limits) (names []string, finish func()) {
	d := hub.DefaultLimits()
	intFlag := func(p *int, name string, def int, usage string) {
		fs.IntVar(p, name, def, usage+"; 0 turns it off")
		names = append(names, name)
	}
	floatFlag := func(p *float64, name string, def float64, usage string) {
		fs.Float64Var(p, name, def, usage+"; 0 turns it off")
		names = append(names, name)
	}
	durFlag := func(p *time.Duration, name string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage)
		names = append(names, name)
	}
	var headerBytes, bodyBytes, messageBytes int
	intFlag(&l.StreamsPerDevice, "max-streams-per-device", d.StreamsPerDevice, "streams open at once to one device")
	intFlag(&l.StreamsPerHub, "max-streams", d.StreamsPerHub, "streams open at once on this node")
	floatFlag(&l.StreamRate, "stream-rate", d.StreamRate, "new streams a second on this node")
	floatFlag(&l.StreamRatePerPolicy, "stream-rate-per-policy", d.StreamRatePerPolicy, "new streams a second per access policy")
	intFlag(&l.PendingHandshakes, "max-pending-streams", d.PendingHandshakes, "streams waiting for a side to connect, and streams on sessions being set up")
	intFlag(&l.MQTTConnsPerSource, "mqtt-conns-per-source", d.MQTTConnsPerSource, "MQTT connections one address (IPv6: /64) holds before they log in")
	floatFlag(&l.MQTTConnRatePerSource, "mqtt-conn-rate-per-source", d.MQTTConnRatePerSource, "MQTT CONNECTs a second from one address")
	intFlag(&headerBytes, "max-header-bytes", d.MaxHeaderBytes, "bytes of an HTTP request's header (431 past it)")
	intFlag(&bodyBytes, "max-body-bytes", int(d.MaxBodyBytes), "bytes of a REST request body (413 past it)")
	intFlag(&messageBytes, "max-message-bytes", int(d.MaxMessageBytes), "bytes of a WebSocket message on a stream (close 1009 past it)")
	durFlag(&l.StreamIdleTimeout, "stream-idle-timeout", d.StreamIdleTimeout, "end a stream with no data either way for this long; 0: never")
	durFlag(&l.StreamCloseTimeout, "stream-close-timeout", d.StreamCloseTimeout, "time a stream's side has to answer the hub's close frame before its connection is closed")
	durFlag(&l.TLSHandshakeTimeout, "tls-handshake-timeout", d.TLSHandshakeTimeout, "time a client has to finish its TLS handshake; 0 turns it off")
	durFlag(&l.HeaderTimeout, "header-timeout", d.HeaderTimeout, "time a client has to send an HTTP request's header; 0 turns it off")
	intFlag(&l.AuthFailures, "auth-failures", d.AuthFailures, "failed logins in a row of one device or policy from one address before it is refused there for a growing while")
	floatFlag(&l.AuthFailureRatePerSource, "auth-failure-rate-per-source", d.AuthFailureRatePerSource, "failed logins a second from one address (IPv6: /64) before all its logins are refused for a growing while")
	durFlag(&l.AuthBackoffMax, "auth-backoff-max", d.AuthBackoffMax, "longest refusal after failed logins; 0: the default")
	return names, func() {
		l.MaxHeaderBytes = headerBytes
		l.MaxBodyBytes = int64(bodyBytes)
		l.MaxMessageBytes = int64(messageBytes)
		// In hub.Limits zero means the default and a negative value off.
		off := func(p *int) {
			if *p <= 0 {
				*p = -1
			}
		}
		offF := func(p *float64) {
			if *p <= 0 {
				*p = -1
			}
		}
		off(&l.StreamsPerDevice)
		off(&l.StreamsPerHub)
		off(&l.PendingHandshakes)
		off(&l.MQTTConnsPerSource)
		off(&l.MaxHeaderBytes)
		off(&l.AuthFailures)
		offF(&l.StreamRate)
		offF(&l.StreamRatePerPolicy)
		offF(&l.MQTTConnRatePerSource)
		offF(&l.AuthFailureRatePerSource)
		if l.MaxBodyBytes <= 0 {
			l.MaxBodyBytes = -1
		}
		if l.MaxMessageBytes <= 0 {
			l.MaxMessageBytes = -1
		}
		if l.TLSHandshakeTimeout <= 0 {
			l.TLSHandshakeTimeout = -1
		}
		if l.HeaderTimeout <= 0 {
			l.HeaderTimeout = -1
		}
	}
}
