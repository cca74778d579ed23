package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/tether-io/tether/hub"
)

// addLimitFlags registers a flag (and its environment variable) for each
// of the hub's limits, defaulting to hub.DefaultLimits, on fs. Every limit
// is off at 0 or less, the way an operator reads "--max-streams 0" (but
// --auth-backoff-max, for which 0 is the default). The
// returned finish, called after fs.Parse, fills in l and reports a bad
// environment value.
func addLimitFlags(fs *flag.FlagSet, l *hub.Limits) (finish func() error) {
	d := hub.DefaultLimits()
	var errs []error
	intFlag := func(p *int, name, env string, def int, usage string) {
		v := def
		if s, ok := os.LookupEnv(env); ok {
			n, err := strconv.Atoi(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a whole number", env, s))
			}
			v = n
		}
		fs.IntVar(p, name, v, fmt.Sprintf("%s; 0 turns it off (env %s)", usage, env))
	}
	floatFlag := func(p *float64, name, env string, def float64, usage string) {
		v := def
		if s, ok := os.LookupEnv(env); ok {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a number", env, s))
			}
			v = f
		}
		fs.Float64Var(p, name, v, fmt.Sprintf("%s; 0 turns it off (env %s)", usage, env))
	}
	durFlag := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		v := def
		if s, ok := os.LookupEnv(env); ok {
			d, err := time.ParseDuration(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a duration", env, s))
			}
			v = d
		}
		fs.DurationVar(p, name, v, fmt.Sprintf("%s (env %s)", usage, env))
	}
	var headerBytes, bodyBytes, messageBytes int
	intFlag(&l.StreamsPerDevice, "max-streams-per-device", "TETHER_MAX_STREAMS_PER_DEVICE", d.StreamsPerDevice, "streams open at once to one device")
	intFlag(&l.StreamsPerHub, "max-streams", "TETHER_MAX_STREAMS", d.StreamsPerHub, "streams open at once on this node")
	floatFlag(&l.StreamRate, "stream-rate", "TETHER_STREAM_RATE", d.StreamRate, "new streams a second on this node")
	floatFlag(&l.StreamRatePerPolicy, "stream-rate-per-policy", "TETHER_STREAM_RATE_PER_POLICY", d.StreamRatePerPolicy, "new streams a second per access policy")
	intFlag(&l.PendingHandshakes, "max-pending-streams", "TETHER_MAX_PENDING_STREAMS", d.PendingHandshakes, "streams waiting for a side to connect")
	intFlag(&l.MQTTConnsPerSource, "mqtt-conns-per-source", "TETHER_MQTT_CONNS_PER_SOURCE", d.MQTTConnsPerSource, "MQTT connections one address (IPv6: /64) holds at once; off behind a proxy that hides addresses")
	floatFlag(&l.MQTTConnRatePerSource, "mqtt-conn-rate-per-source", "TETHER_MQTT_CONN_RATE_PER_SOURCE", d.MQTTConnRatePerSource, "MQTT CONNECTs a second from one address")
	intFlag(&headerBytes, "max-header-bytes", "TETHER_MAX_HEADER_BYTES", d.MaxHeaderBytes, "bytes of an HTTP request's header (431 past it)")
	intFlag(&bodyBytes, "max-body-bytes", "TETHER_MAX_BODY_BYTES", int(d.MaxBodyBytes), "bytes of a REST request body (413 past it)")
	intFlag(&messageBytes, "max-message-bytes", "TETHER_MAX_MESSAGE_BYTES", int(d.MaxMessageBytes), "bytes of a WebSocket message on a stream (close 1009 past it)")
	durFlag(&l.StreamIdleTimeout, "stream-idle-timeout", "TETHER_STREAM_IDLE_TIMEOUT", d.StreamIdleTimeout, "end a stream with no data either way for this long; 0: never")
	durFlag(&l.TLSHandshakeTimeout, "tls-handshake-timeout", "TETHER_TLS_HANDSHAKE_TIMEOUT", d.TLSHandshakeTimeout, "time a client has to finish its TLS handshake; 0 turns it off")
	durFlag(&l.HeaderTimeout, "header-timeout", "TETHER_HEADER_TIMEOUT", d.HeaderTimeout, "time a client has to send an HTTP request's header; 0 turns it off")
	intFlag(&l.AuthFailures, "auth-failures", "TETHER_AUTH_FAILURES", d.AuthFailures, "failed logins from one address before it is refused for a growing while")
	durFlag(&l.AuthBackoffMax, "auth-backoff-max", "TETHER_AUTH_BACKOFF_MAX", d.AuthBackoffMax, "longest refusal after failed logins; 0: the default")
	return func() error {
		if err := errors.Join(errs...); err != nil {
			return err
		}
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
		return nil
	}
}
