package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"syscall"

	"github.com/tether-io/tether/wire"
)

// Request is a stream request from the hub: a service wants a tunnel named
// Name to this device. Answer it with exactly one of Accept, Reject or
// RejectUnreachable, soon: the service waits for the answer (60 s by
// default).
//
// A request comes over MQTT, or, from a hub that offers sessions, on the
// device's data session (mux.go); Accept and the rejects work alike for
// both.
type Request struct {
	Name string // the stream name the service asked for, e.g. "ssh"
	RID  string // the hub's request id, echoed in the answer
	// URL is the bridge to join, wss://{node}/bridges/...; empty for a
	// stream the hub opened on the device's session, which joins nothing.
	URL string
	// StreamID is the hub's id of the stream, as its stream logs name it;
	// empty when the hub's URL has none.
	StreamID string

	token    string        // the device side's bearer token for URL; never logged
	pushed   *pushedStream // the stream on the session, for a request that came there
	c        *Client
	answered atomic.Bool
}

// bridgeStreamID is the stream id in a streaming URL
// (wss://host/bridges/{hub}/{device}/{stream}/{id}), "" when the URL is
// not of that shape.
func bridgeStreamID(streamURL string) string {
	u, err := url.Parse(streamURL)
	if err != nil {
		return ""
	}
	_, _, _, id, err := wire.ParseBridgePath(u.EscapedPath())
	if err != nil {
		return ""
	}
	return id
}

var errAnswered = errors.New("device: stream request already answered")

// Accept answers 200 and joins the stream's bridge, returning the stream as
// a net.Conn to the service. The answer and the dial run at the same time,
// since the hub pairs the two sides in either order: the tunnel is ready one
// TLS handshake sooner. A stream that came on the session is answered
// there and joins nothing. The stream's Read returns io.EOF only when the
// stream ended cleanly, and a *CloseError when it was cut.
func (r *Request) Accept(ctx context.Context) (net.Conn, error) {
	if !r.answered.CompareAndSwap(false, true) {
		return nil, errAnswered
	}
	if r.pushed != nil {
		return r.acceptPushed(ctx)
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

// Reject answers 400 (wire.AnswerNotAllowed): the device does not serve a
// stream of this name. The service is told the device declined; through a
// Tether hub, that the stream is not allowed.
func (r *Request) Reject() error {
	return r.reject(wire.AnswerNotAllowed)
}

// RejectUnreachable answers that the device serves this stream but could
// not connect to its target; err is the dial's error. The service learns
// which of three it was, from the answer's status: the target refused the
// connection (503), the dial timed out (504), or it failed otherwise (502,
// e.g. no route to the host). Dial the target before answering, as
// tether agent does, so that a service hears this rather than find its
// stream closed on arrival.
func (r *Request) RejectUnreachable(err error) error {
	return r.reject(unreachableStatus(err))
}

// unreachableStatus is the answer for a target that err failed to reach.
func unreachableStatus(err error) int {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return wire.AnswerTargetRefused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return wire.AnswerTargetTimeout
	default:
		return wire.AnswerTargetFailed
	}
}

func (r *Request) reject(status int) error {
	if !r.answered.CompareAndSwap(false, true) {
		return errAnswered
	}
	if r.pushed != nil {
		return r.rejectPushed(status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), answerTimeout)
	defer cancel()
	if err := r.c.answer(ctx, status, r.RID); err != nil {
		return fmt.Errorf("device: rejecting stream %q (rid %s): %w", r.Name, r.RID, err)
	}
	return nil
}
