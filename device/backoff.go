package device

import (
	"time"

	"github.com/tether-io/tether/internal/retry"
)

// backoff is how long to wait before reconnect attempt n (counting from 0):
// retry.Delay, full jitter, the curve tether's start-up waits use too.
func backoff(n int, base, max time.Duration, rnd func(int64) int64) time.Duration {
	return retry.Delay(n, base, max, rnd)
}
