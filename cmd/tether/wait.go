package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/internal/retry"
	"github.com/tether-io/tether/service"
)

// Start-up waits use the agent's reconnect delays (the device SDK's
// defaults) and log a reason as the agent does: a new one at once, the
// same one every 30 s.
const (
	waitMinDelay = time.Second
	waitMaxDelay = device.DefaultMaxBackoff
	waitLogEvery = 30 * time.Second
)

// waitForHub runs check until it succeeds, fails for any reason but an
// unreachable hub, or ctx ends; it returns check's last error. Each failure
// that waiting may cure is logged through log with its reason, explained
// by explain.
//
// The forwarder waits, since once running it rides out a hub outage (each
// connection tries the hub again) and exiting at start for the same
// outage helps nobody; a service that runs it at boot needs no restart
// loop. pipe does not: it is one-shot, run by ssh, which should hear at
// once that the hub is down rather than hang.
func waitForHub(ctx context.Context, log *slog.Logger, check func(context.Context) error, explain func(error) error) error {
	rep := retry.Reporter{Every: waitLogEvery}
	for attempt := 0; ; attempt++ {
		err := check(ctx)
		if err == nil || !hubUnavailable(err) || ctx.Err() != nil {
			return err
		}
		d := retry.Delay(attempt, waitMinDelay, waitMaxDelay, rand.Int64N)
		rep.Log(log, "cannot reach the hub yet; retrying", explain(err), "retry_in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// hubUnavailable reports whether a REST call failed for want of a hub
// that answers: the network (refused, reset, timed out, a name that does
// not resolve), or an answer that says to come back later (a balancer
// with no hub behind it, a hub starting or draining, throttling). A hub
// that refuses the key, a certificate that is not trusted and any other
// answer are not cured by waiting.
func hubUnavailable(err error) bool {
	if ae, ok := errors.AsType[*service.APIError](err); ok {
		switch ae.StatusCode {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return false
	}
	_, network := errors.AsType[*net.OpError](err)
	_, request := errors.AsType[*url.Error](err)
	return network || request
}
