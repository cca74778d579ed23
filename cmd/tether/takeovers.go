package main

import (
	"fmt"
	"time"

	"github.com/tether-io/tether/wire"
)

// warnTakeovers tells the person reading `devices show` that a device's
// session keeps being taken over, the sign of two agents with one key. The
// JSON on stdout has the figures; this line, on stderr, says what they
// mean. One takeover is routine (a device whose link died came back
// before the hub noticed) and goes unmentioned.
func warnTakeovers(g *globals, d *wire.Device) {
	t := d.Takeovers
	if t == nil || t.LastHour < 2 {
		return
	}
	fmt.Fprintf(g.Stderr, "tether: the session of %s was taken over %d times in the last hour, last at %s (%s replaced %s): is another agent running with this device's key? a cloned SD card?\n",
		d.DeviceID, t.LastHour, t.Last.Local().Format(time.DateTime), t.ByRemote, t.DisplacedRemote)
}
