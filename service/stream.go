package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/wire"
)

// dial joins the streaming endpoint; tests replace it to see what
// OpenStream hands over without a WebSocket server.
var dial = wsconn.Dial

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
// ErrThrottled when the hub or the device said no.
func (c *Client) OpenStream(ctx context.Context, deviceID, streamName string) (net.Conn, error) {
	if deviceID == "" {
		return nil, errNoID
	}
	if streamName == "" || strings.ContainsAny(streamName, "/?#") {
		return nil, fmt.Errorf("service: bad stream name %q", streamName)
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.ResponseTimeout+slack)
	defer cancel()
	// The device ID is escaped; the stream name goes as is (WIRE.md §2).
	req, err := c.newRequest(rctx, "POST", "/twins/"+url.PathEscape(deviceID)+"/streams/"+streamName, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(wire.HeaderConnectTimeout, seconds(c.opts.ConnectTimeout))
	req.Header.Set(wire.HeaderResponseTimeout, seconds(c.opts.ResponseTimeout))
	resp, _, err := c.do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, fmt.Errorf("stream %q to device %q: the hub did not answer within %v: %w", streamName, deviceID, c.opts.ResponseTimeout+slack, ErrTimeout)
		}
		return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, err)
	}
	if !strings.EqualFold(resp.Header.Get(wire.HeaderIsAccepted), "true") {
		return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, ErrRejected)
	}
	u, tok := resp.Header.Get(wire.HeaderURL), resp.Header.Get(wire.HeaderAuthToken)
	if u == "" || tok == "" {
		return nil, fmt.Errorf("stream %q to device %q: the hub accepted but sent no %s or %s", streamName, deviceID, wire.HeaderURL, wire.HeaderAuthToken)
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout+slack)
	defer cancel()
	conn, err := dial(dctx, u, tok, c.tlsConf)
	if err != nil {
		if isUntrusted(err) {
			err = &hubError{addr: hostOf(u), err: err}
		}
		return nil, fmt.Errorf("stream %q to device %q: joining %s: %w", streamName, deviceID, redactURL(u), err)
	}
	return conn, nil
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
