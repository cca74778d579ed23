package device

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tether-io/tether/internal/retry"
)

// waitLogEvery is how often waitForHub repeats a reason it has logged: a
// device set up before its hub says why it waits, and says it again now
// and then, without a line per attempt.
const waitLogEvery = 30 * time.Second

// waitForHub is Dial's wait for a hub it could not reach (Options.
// WaitForHub): it tries again, attempt n after backoff(n), as keepUp does
// for a hub that went away, until a connection succeeds, the hub refuses
// the device, or ctx ends. first is the failure that started the wait.
func (c *Client) waitForHub(ctx context.Context, first error) (*session, error) {
	rep := retry.Reporter{Every: waitLogEvery}
	err := first
	for attempt := 0; ; attempt++ {
		if !reachFailure(err) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, gaveUp(ctx, err)
		}
		d := backoff(attempt, c.minB, c.maxB, rand.Int64N)
		rep.Log(c.log, "cannot connect to the hub yet; retrying", err, "attempt", attempt+1, "retry_in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, gaveUp(ctx, err)
		case <-t.C:
		}
		var s *session
		if s, err = c.connectAny(ctx); err == nil {
			return s, nil
		}
	}
}

// gaveUp is the error of a wait that ctx ended: the last failure, which
// says what was waited for, and ctx's reason.
func gaveUp(ctx context.Context, last error) error {
	if errors.Is(last, ctx.Err()) {
		return last
	}
	return fmt.Errorf("%w (gave up waiting: %w)", last, context.Cause(ctx))
}

// reachFailure reports whether a connection attempt failed for want of a
// hub that takes connections, which waiting may cure, rather than because
// the hub refused this device or the device refused the hub. With several
// hubs (Options.Hubs) one refusal among the failures is enough to stop:
// the setup, not the network, needs fixing.
func reachFailure(err error) bool {
	var refused connackError
	switch {
	case errors.Is(err, ErrUnauthorized), untrusted(err), errors.Is(err, errSubscriptionRefused):
		return false
	case errors.As(err, &refused):
		return refused == connackServerUnavailable
	}
	return true
}
