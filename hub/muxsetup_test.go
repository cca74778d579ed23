package hub_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

// TestMuxSetupCap: a service's session that opens streams and never
// sends their headers holds at most PendingHandshakes of them in setup;
// the next is answered 429 at once, header or not, and counted; a slot
// comes back when a stream in setup ends, and streams are set up again.
func TestMuxSetupCap(t *testing.T) {
	const slots = 3
	h := startMuxHub(t, func(c *node.Config) {
		c.Limits = hub.Limits{AuthFailures: -1, AuthFailureRatePerSource: -1, PendingHandshakes: slots}
	})
	h.sessionDevice(t, "dev1", accept)
	svc := h.serviceSession(t)

	var silent []*yamux.Stream
	for range slots {
		st, err := svc.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, st)
	}
	// The hub accepts a session's streams in the order they were opened
	// and takes a slot for each before it accepts the next: the silent
	// streams hold them all.
	refused, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "echo"})
	if c != nil {
		c.Close()
		t.Fatalf("with %d silent streams in setup, a stream was accepted", slots)
	}
	if refused.ErrorCode != wire.CodeName(wire.CodeThrottled) || !strings.Contains(refused.Message, "being set up") {
		t.Errorf("the refusal: %+v, want a throttling that says why", refused)
	}
	if got := h.metric(t, `tether_limited_total{limit="pending_handshakes"}`); got == "0" {
		t.Errorf("refusals counted: %s", got)
	}

	// A silent stream that ends gives its slot back.
	silent[0].Reset()
	for deadline := time.Now().Add(muxWait); ; {
		ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "echo"})
		if c != nil {
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			c.Close()
		}
		if ans.Accepted {
			break
		}
		if ans.Status != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after a silent stream ended: %+v", ans)
		}
	}
	for _, st := range silent[1:] {
		st.Reset()
	}
}
