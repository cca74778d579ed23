package device

import "time"

// backoff is how long to wait before reconnect attempt n (counting from 0):
// uniform in [0, min(max, base·2ⁿ)], "full jitter". The randomness matters
// more than the curve: when a hub node restarts, every device it held loses
// its link at the same instant, and full jitter spreads their reconnects over
// the whole window instead of sending them back in synchronized waves.
// rnd(n) returns a uniform value in [0, n); tests pass a fixed one.
func backoff(n int, base, max time.Duration, rnd func(int64) int64) time.Duration {
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
