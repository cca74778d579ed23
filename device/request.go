package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// Request is a stream request from the hub: a service wants a tunnel named
// Name to this device. Answer it with exactly one of Accept or Reject, soon:
// the service waits for the answer (60 s by default).
type Request struct {
	Name string // the stream name the service asked for, e.g. "ssh"
	RID  string // the hub's request id, echoed in the answer
	URL  string // the bridge to join: wss://{node}/bridges/...

	token    string // the device side's bearer token for URL; never logged
	c        *Client
	answered atomic.Bool
}

var errAnswered = errors.New("device: stream request already answered")

// Accept answers 200 and joins the stream's bridge, returning the stream as
// a net.Conn to the service. The answer and the dial run at the same time,
// since the hub pairs the two sides in either order: the tunnel is ready one
// TLS handshake sooner.
func (r *Request) Accept(ctx context.Context) (net.Conn, error) {
	if !r.answered.CompareAndSwap(false, true) {
		return nil, errAnswered
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type dialed struct {
		conn net.Conn
		err  error
	}
	ch := make(chan dialed, 1)
	go func() {
		conn, err := r.c.streams.Dial(ctx, r.URL, r.token, r.c.bridgeTLS)
		ch <- dialed{conn, err}
	}()

	actx, acancel := context.WithTimeout(ctx, answerTimeout)
	aerr := r.c.answer(actx, 200, r.RID)
	acancel()
	if aerr != nil {
		cancel() // the hub never heard yes: do not wait out the dial
	}
	d := <-ch
	if aerr != nil {
		if d.conn != nil {
			d.conn.Close()
		}
		return nil, fmt.Errorf("device: accepting stream %q (rid %s): %w", r.Name, r.RID, aerr)
	}
	if d.err != nil {
		return nil, fmt.Errorf("device: joining stream %q (rid %s) at %s: %w", r.Name, r.RID, r.URL, d.err)
	}
	return d.conn, nil
}

// Reject answers 400: the service is told the device declined.
func (r *Request) Reject() error {
	if !r.answered.CompareAndSwap(false, true) {
		return errAnswered
	}
	ctx, cancel := context.WithTimeout(context.Background(), answerTimeout)
	defer cancel()
	if err := r.c.answer(ctx, 400, r.RID); err != nil {
		return fmt.Errorf("device: rejecting stream %q (rid %s): %w", r.Name, r.RID, err)
	}
	return nil
}
