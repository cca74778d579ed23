package device

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tether-io/tether/device/devicetest"
	"github.com/tether-io/tether/wire"
)

// RejectUnreachable answers with the status of the dial's failure, so
// that the service learns the device could not reach its target, and how.
func TestRejectUnreachable(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	c, _ := mustDial(t, b, key, TLS)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()

	for _, tc := range []struct {
		rid    string
		dial   func() error
		status int
	}{
		{"refused", func() error { return dialErr(context.Background(), dead) }, wire.AnswerTargetRefused},
		{"timeout", func() error { return dialErr(past, dead) }, wire.AnswerTargetTimeout},
		{"bad-port", func() error { return dialErr(context.Background(), "127.0.0.1:99999") }, wire.AnswerTargetFailed},
	} {
		b.SendRequest(wire.StreamRequest{Name: "ssh", RID: tc.rid, URL: "wss://127.0.0.1:1/bridges/h/dev1/ssh/1", Token: "t"}.Topic())
		r := nextRequest(t, c)
		derr := tc.dial()
		if derr == nil {
			t.Fatalf("%s: the dial succeeded", tc.rid)
		}
		if err := r.RejectUnreachable(derr); err != nil {
			t.Fatal(err)
		}
		if got, want := b.NextAnswer(), wire.ResponseTopic(tc.status, tc.rid); got != want {
			t.Errorf("after %v: answer = %q, want %q", derr, got, want)
		}
		if err := r.Reject(); err == nil {
			t.Errorf("%s: a second answer to one request succeeded", tc.rid)
		}
	}
}

func dialErr(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if conn != nil {
		conn.Close()
	}
	return err
}
