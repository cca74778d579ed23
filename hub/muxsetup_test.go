package hub_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/internal/wsconn"
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

// TestMuxSetupCapEndsAtAnswer: a stream holds its setup slot until it is
// answered, not while it runs, though its serving goroutine runs it (the
// device's side joined first, over a stream connection of its own, as an
// Azure device's does): with one slot, a second stream is set up while
// the first still runs.
func TestMuxSetupCapEndsAtAnswer(t *testing.T) {
	h := startMuxHub(t, func(c *node.Config) {
		c.Limits = hub.Limits{AuthFailures: -1, AuthFailureRatePerSource: -1, PendingHandshakes: 1}
	})
	tok := h.addDevice(t, "dev1")
	mq := h.connectMQTT(t, "dev1", tok, false)
	svc := h.serviceSession(t)
	for i := range 2 {
		type opened struct {
			ans wire.MuxAnswer
			c   *wsconn.Conn
		}
		ch := make(chan opened, 1)
		go func() {
			ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: "dev1", Name: "echo"})
			ch <- opened{ans, c}
		}()
		req := recv(t, mq.reqs)
		// The device joins before it answers: the service's side, when
		// it comes, finds it waiting and runs the stream.
		ctx, cancel := context.WithTimeout(context.Background(), muxWait)
		dev, err := wsconn.Dial(ctx, req.URL, req.Token, h.tls)
		cancel()
		if err != nil {
			t.Fatalf("stream %d: the device's side: %v", i, err)
		}
		defer dev.Close()
		mq.answer(t, req, http.StatusOK)
		o := recv(t, ch)
		if !o.ans.Accepted || o.c == nil {
			t.Fatalf("stream %d with the first still open: %+v, want it accepted", i, o.ans)
		}
		defer o.c.Close()
		if _, err := o.c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		dev.SetReadDeadline(time.Now().Add(muxWait))
		if _, err := io.ReadFull(dev, b); err != nil || string(b) != "ping" {
			t.Fatalf("stream %d: the device read %q, %v", i, b, err)
		}
	}
}
