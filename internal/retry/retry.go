// Package retry holds what the device SDK's reconnects and the CLI's
// start-up waits share: one back-off curve, so that an agent started
// before its hub comes back exactly like one that lost it, and a log that
// gives each failure's reason without a line per attempt.
package retry

import (
	"log/slog"
	"time"
)

// Delay is how long to wait before retry n (counting from 0): uniform in
// [0, min(max, base·2ⁿ)], "full jitter". The randomness matters more than
// the curve: when a hub node restarts, every device it held loses its
// link at the same instant, and full jitter spreads their reconnects over
// the whole window instead of sending them back in synchronized waves.
// rnd(n) returns a uniform value in [0, n); tests pass a fixed one.
func Delay(n int, base, max time.Duration, rnd func(int64) int64) time.Duration {
	ceil := max
	// base<<n overflows for large n; comparing against max>>n does not.
	if n < 63 && base <= max>>n {
		ceil = base << n
	}
	if ceil <= 0 {
		return 0
	}
	return time.Duration(rnd(int64(ceil) + 1))
}

// Reporter logs the failures of a retry loop: a failure whose reason
// differs from the last one logged at once, the same reason again at most
// once per Every, with how many attempts went unlogged in between. A hub
// that stays down for a day costs a line every Every, and a change (the
// name now resolves, the port now answers) shows when it happens.
type Reporter struct {
	Every time.Duration
	Now   func() time.Time // default time.Now

	last    string
	at      time.Time
	skipped int
}

// Log logs msg with err and attrs at warning level through log, if the
// failure is due a line.
func (r *Reporter) Log(log *slog.Logger, msg string, err error, attrs ...any) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	t, reason := now(), err.Error()
	if reason == r.last && t.Sub(r.at) < r.Every {
		r.skipped++
		return
	}
	if r.skipped > 0 {
		attrs = append(attrs, "unlogged", r.skipped)
	}
	log.Warn(msg, append(attrs, "err", err)...)
	r.last, r.at, r.skipped = reason, t, 0
}
