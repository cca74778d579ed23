package device

import (
	"time"

	"github.com/tether-io/tether/wire"
)

// A device is displaced when the hub takes its session over for a newer
// connection with the same identity, and says so (wire.TopicTakenOver)
// just before it drops the old connection. A device's own reconnect never
// displaces it: its old link is dead by then and hears nothing. So a
// client that hears it is one of two holders of the device's key (a cloned
// SD card, a second agent left running), and the two would knock each
// other off for ever, each reconnecting within seconds. Instead the
// displaced one says why at warn and waits longer each time in a row, so
// that one of them stays connected for longer and longer stretches and the
// operator has time to read the log.

// maxDisplacedDelay caps the wait after a displacement (Options.MaxBackoff
// when that is longer): a device whose twin has been switched off comes
// back within it.
const maxDisplacedDelay = 10 * time.Minute

// displacedHint goes with every displacement the client logs.
const displacedHint = "is another agent running with this device's key? a cloned SD card?"

// displacedDelay is the wait before reconnecting after the nth
// displacement in a row (n from 1): maxB·2ⁿ⁻¹, capped at limit, with the
// upper half jittered so the twins do not fall into step. rnd(n) returns
// a uniform value in [0, n).
func displacedDelay(n int, maxB, limit time.Duration, rnd func(int64) int64) time.Duration {
	d := min(maxB, limit)
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + time.Duration(rnd(int64(d-d/2)+1))
}

// displacementsInARow is the count of displacements in a row, this one
// included, given the count n before it and how long ago the last one was.
// A twin keeps displacing within two of the longest waits (one of each
// twin); a quiet spell longer than that means it has gone, and the waits
// start short again.
func displacementsInARow(n int, sinceLast, limit time.Duration) int {
	if sinceLast > 3*limit {
		return 1
	}
	return n + 1
}

// onPublish is what the session's connection does with a message: the
// hub's takeover notice is the session's; everything else the client's.
func (s *session) onPublish(c *Client) func(topic string) {
	return func(topic string) {
		if by, ok := wire.ParseTakenOver(topic); ok {
			s.displacedBy.Store(&by)
			return
		}
		c.onMessage(s, topic)
	}
}

// displaced reports whether the hub said a newer connection took this
// session over, and that connection's remote address.
func (s *session) displaced() (by string, ok bool) {
	if p := s.displacedBy.Load(); p != nil {
		return *p, true
	}
	return "", false
}
