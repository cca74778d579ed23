package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-io/tether/device/devicetest"
	"github.com/tether-io/tether/wire"
)

// dialFake dials a client whose one connection is the device's end of the
// fake broker's pipe: a hub that reads only when the test does, which
// loopback TCP, with its buffers, cannot be. Later dials fail.
func dialFake(t *testing.T) (*Client, *fakeBroker) {
	t.Helper()
	b, dev := newFakeBroker(t)
	var used atomic.Bool
	opts := Options{
		KeepAlive: time.Minute, // no ping in the way
		dial: func(context.Context, func(context.Context) (net.Conn, error)) (net.Conn, error) {
			if used.Swap(true) {
				return nil, errors.New("the fake hub takes one connection")
			}
			return dev, nil
		},
	}
	type dialed struct {
		c   *Client
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), devicetest.Timeout)
		defer cancel()
		c, err := Dial(ctx, "HostName=hub.example;DeviceId=dev1;SharedAccessKey="+devicetest.NewKey(), opts)
		done <- dialed{c, err}
	}()
	if typ, _ := b.read(); typ != pktConnect {
		t.Fatalf("first packet type %#x, want CONNECT", typ)
	}
	b.write(pktConnack, []byte{0, 0})
	if typ, _ := b.read(); typ&0xf0 != pktSubscribe {
		t.Fatalf("second packet type %#x, want SUBSCRIBE", typ)
	}
	b.write(pktSuback, []byte{0, 1, 0, 0})
	d := <-done
	if d.err != nil {
		t.Fatal(d.err)
	}
	return d.c, b
}

// streamRequest is a stream request's PUBLISH body, as the hub sends it.
func streamRequest(rid string) []byte {
	return appendString(nil, wire.StreamRequest{Name: "ssh", RID: rid, URL: "wss://127.0.0.1:1/b", Token: "t"}.Topic())
}

// A request that finds the queue full is rejected without the reader
// waiting for the write: a hub that does not read for a while (a full
// send buffer, a stalled link) must not stop the device from reading what
// comes next. The reject goes out once the hub reads again.
func TestRejectDoesNotStallReader(t *testing.T) {
	c, b := dialFake(t)
	for i := range requestQueue {
		b.write(pktPublish, streamRequest(fmt.Sprint("r", i)))
	}
	b.write(pktPublish, streamRequest("over1"))
	// The hub reads nothing; the device must still read. Its reader
	// blocked on the reject would hold this write for answerTimeout.
	for _, rid := range []string{"over2", "over3"} {
		b.conn.SetWriteDeadline(time.Now().Add(answerTimeout / 2))
		if _, err := b.conn.Write(appendPacket(nil, pktPublish, streamRequest(rid))); err != nil {
			t.Fatalf("the device stopped reading while its reject waited to go out: writing request %s: %v", rid, err)
		}
	}
	for _, rid := range []string{"over1", "over2", "over3"} {
		typ, body := b.read()
		topic, _, err := parsePublish(typ, body)
		if typ&0xf0 != pktPublish || err != nil {
			t.Fatalf("packet type %#x (%v), want the reject of %s", typ, err, rid)
		}
		if want := wire.ResponseTopic(wire.AnswerBusy, rid); topic != want {
			t.Fatalf("answer %q, want %q", topic, want)
		}
	}
	if r := nextRequest(t, c); r.RID != "r0" {
		t.Fatalf("first queued request = %q, want r0", r.RID)
	}
	// Close answers the rest; the hub reads them.
	go io.Copy(io.Discard, b.conn)
	c.Close()
}

// Close while reconnecting has no connection to reject on: the requests,
// which came on the connection the hub lost, are dropped, not left queued.
func TestCloseWhileReconnectingDropsQueued(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	c, logs := mustDial(t, b, key, TLS)
	b.SendRequest(wire.StreamRequest{Name: "ssh", RID: "queued", URL: "wss://127.0.0.1:1/b", Token: "t"}.Topic())
	waitFor(t, "the request to be queued", func() bool { return len(c.requests) == 1 })
	b.Stop()
	waitFor(t, "Connected() to turn false", func() bool { return !c.Connected() })
	c.Close()
	if n := len(c.requests); n != 0 {
		t.Fatalf("%d requests still queued after Close", n)
	}
	if !strings.Contains(logs.String(), "dropped the stream requests waiting for Accept") || !strings.Contains(logs.String(), "count=1") {
		t.Errorf("Close did not log the request it dropped:\n%s", logs)
	}
}
