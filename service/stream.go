package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/wire"
)

// dial, when set, joins the streaming endpoint in place of the client's
// pool; tests set it to see what OpenStream hands over without a WebSocket
// server.
var dial func(ctx context.Context, url, token string, tlsConf *tls.Config) (net.Conn, error)

// slack is added to the hub's own timeouts when bounding our waits: the
// hub answers at its deadline, so ours must come a little later, yet a hub
// that never answers must not hang the caller.
const slack = 10 * time.Second

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// OpenStream asks the device for a stream named streamName and returns it
// once both sides have joined. The error wraps ErrDeviceNotFound,
// ErrDeviceOffline, ErrRejected, ErrTimeout, ErrUnauthorized or
// ErrThrottled when the hub or the device said no; a rejection is a
// *RejectError, which wraps ErrNotAllowed or ErrTargetUnreachable too
// when the hub says why. The stream's Read returns io.EOF only when the
// stream ended cleanly, and a *CloseError when it was cut.
//
// The stream goes on the client's session when the hub has sessions (see
// the package doc), on a WebSocket of its own otherwise; the caller sees
// no difference.
func (c *Client) OpenStream(ctx context.Context, deviceID, streamName string) (net.Conn, error) {
	if err := checkStream(deviceID, streamName); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		st, err := c.startOnSession(ctx, deviceID, streamName)
		if errors.Is(err, errUseStreams) {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := st.Accepted(ctx); err != nil {
			st.cancel()
			if st.lostSession() {
				// The hub went away before it answered (a restart, a
				// network failure): it either never asked the device or
				// is gone with the stream, as for the POST's retry.
				if attempt == 0 {
					continue
				}
				break
			}
			return nil, err
		}
		return st.conn, nil
	}
	return c.openByStreams(ctx, deviceID, streamName)
}

// checkStream checks OpenStream's arguments.
func checkStream(deviceID, streamName string) error {
	if deviceID == "" {
		return errNoID
	}
	if streamName == "" || strings.ContainsAny(streamName, "/?#") {
		return fmt.Errorf("service: bad stream name %q", streamName)
	}
	return nil
}

// openByStreams opens a stream on a WebSocket of its own: by Tether's
// one-request opening, or by the POST and a join as Azure's hub wants.
func (c *Client) openByStreams(ctx context.Context, deviceID, streamName string) (net.Conn, error) {
	if dial == nil && !c.twoRequests.Load() {
		conn, err := c.openInOne(ctx, deviceID, streamName)
		switch {
		case errors.Is(err, errNoOneRequest):
			c.twoRequests.Store(true)
		case errors.Is(err, errNotAnswered):
			// This request falls back; the next one tries again.
		default:
			return conn, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.ResponseTimeout+slack)
	defer cancel()
	resp, err := c.requestStream(rctx, deviceID, streamName)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, c.noAnswer(deviceID, streamName)
		}
		return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, err)
	}
	if !strings.EqualFold(resp.Header.Get(wire.HeaderIsAccepted), "true") {
		return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, rejectError(resp.Header))
	}
	u, tok := resp.Header.Get(wire.HeaderURL), resp.Header.Get(wire.HeaderAuthToken)
	if u == "" || tok == "" {
		return nil, fmt.Errorf("stream %q to device %q: the hub accepted but sent no %s or %s", streamName, deviceID, wire.HeaderURL, wire.HeaderAuthToken)
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout+slack)
	defer cancel()
	join := c.streams.Dial
	if dial != nil {
		join = dial
	}
	conn, err := join(dctx, u, tok, c.tlsConf)
	if err != nil {
		if isUntrusted(err) {
			err = &hubError{addr: hostOf(u), err: err}
		}
		return nil, fmt.Errorf("stream %q to device %q: joining %s: %w", streamName, deviceID, redactURL(u), err)
	}
	return conn, nil
}

// noAnswer is the error of a stream request the hub did not answer
// within the client's response timeout and slack.
func (c *Client) noAnswer(deviceID, streamName string) error {
	return fmt.Errorf("stream %q to device %q: the hub did not answer within %v: %w", streamName, deviceID, c.opts.ResponseTimeout+slack, ErrTimeout)
}

// errNoOneRequest means the hub does not know the one-request opening.
var errNoOneRequest = errors.New("service: the hub has no one-request stream opening")

// errNotAnswered means the one-request opening got an answer that need
// not be the hub's (see passing): it proves nothing about the hub.
var errNotAnswered = errors.New("service: the one-request stream opening was not answered by the hub")

// passing reports whether an answer of this status, without the hub's
// marker, may come from something between the client and the hub rather
// than from the hub: a balancer or proxy whose hub is restarting or out of
// reach (5xx), or that is shedding load (429) or timed out (408). Such an
// answer says nothing of what the hub knows, so it must not switch the
// client to two requests for good. A hub that lacks the one-request
// opening (Azure's) answers the upgrade as any request it does not serve,
// a 404 or a 405.
func passing(status int) bool {
	return status/100 == 5 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
}

// openInOne opens a stream with Tether's one-request opening
// (docs/protocol.md): a WebSocket upgrade on the stream request's path,
// which the hub answers 101 once the device accepted, the connection then
// being the stream. It saves the POST's answer and the second request: one
// round trip fewer before the first byte, and less work for the hub. On a
// pooled connection, a dead one is retried as the POST is (requestStream):
// the hub it went to either never read it or is gone. It returns
// errNoOneRequest when the hub answered as one without it, and
// errNotAnswered when something in between may have answered instead.
func (c *Client) openInOne(ctx context.Context, deviceID, streamName string) (net.Conn, error) {
	tok, err := c.token()
	if err != nil {
		return nil, fmt.Errorf("service: signing a token: %w", err)
	}
	h := http.Header{}
	h.Set("Authorization", tok)
	h.Set(wire.HeaderConnectTimeout, seconds(c.opts.ConnectTimeout))
	h.Set(wire.HeaderResponseTimeout, seconds(c.opts.ResponseTimeout))
	// The device ID is escaped; the stream name goes as is, as Azure's
	// clients send it: a stream name holds no "/".
	u := "ws" + strings.TrimPrefix(c.base, "http") + "/twins/" + url.PathEscape(deviceID) + "/streams/" + streamName + "?api-version=" + wire.APIVersion
	rctx, cancel := context.WithTimeout(ctx, c.opts.ResponseTimeout+slack)
	defer cancel()
	conn, err := c.streams.DialHeader(rctx, u, h, c.tlsConf)
	var herr *wsconn.HandshakeError
	switch {
	case err == nil:
		return conn, nil
	case errors.As(err, &herr):
		if herr.Header.Get(wire.HeaderOneRequest) == "" {
			// Whatever it said, it was not said to this request.
			if passing(herr.StatusCode) {
				return nil, errNotAnswered
			}
			return nil, errNoOneRequest
		}
		if herr.StatusCode/100 == 2 {
			// Not 101: the device said no.
			return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, rejectError(herr.Header))
		}
		return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, newAPIError(herr.StatusCode, herr.Header, herr.Code, herr.Message))
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return nil, c.noAnswer(deviceID, streamName)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, ctx.Err())
	default:
		return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, &hubError{addr: c.cs.Address(), err: err})
	}
}

// requestStream sends the stream request (the POST), retrying once when
// the keep-alive connection it went out on turned out to be dead.
//
// Why: after a hub restart, or once a load balancer or NAT has dropped an
// idle connection, the client's pool can still hold a connection to the old
// peer. net/http retries a POST by itself only when not a byte of it was
// written; when the request went out and the connection then ended with
// EOF or a reset, before any answer, it gives up, because a POST need not
// be idempotent. Here the retry is safe: the peer that dropped the
// connection either never read the request (an idle close racing with our
// reuse) or is gone with it (a dead process cannot have asked the device).
// At worst the device sees one extra request, which it answers and the hub
// lets expire. A failure on a new connection, an answer, however short, or
// the caller's deadline are not retried.
func (c *Client) requestStream(ctx context.Context, deviceID, streamName string) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		// The device ID is escaped; the stream name goes as is, as Azure's
		// clients send it: a stream name holds no "/".
		req, err := c.newRequest(ctx, "POST", "/twins/"+url.PathEscape(deviceID)+"/streams/"+streamName, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set(wire.HeaderConnectTimeout, seconds(c.opts.ConnectTimeout))
		req.Header.Set(wire.HeaderResponseTimeout, seconds(c.opts.ResponseTimeout))
		var reused, answered atomic.Bool
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn:              func(info httptrace.GotConnInfo) { reused.Store(info.Reused) },
			GotFirstResponseByte: func() { answered.Store(true) },
		}))
		resp, _, err := c.do(req)
		var he *hubError
		if attempt == 0 && errors.As(err, &he) && reused.Load() && !answered.Load() && ctx.Err() == nil {
			// The other idle connections went to the same peer: drop them
			// too, so that the retry dials afresh.
			c.http.CloseIdleConnections()
			continue
		}
		return resp, err
	}
}

func hostOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Host
	}
	return u
}

// redactURL keeps only scheme, host and path: the streaming URL carries
// no secret today, but a hub could put one in its query.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "the streaming endpoint"
	}
	return p.Scheme + "://" + p.Host + p.EscapedPath()
}
