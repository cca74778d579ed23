package relay

import (
	"errors"
	"net"
	"time"
)

// Side names a side of a stream, for Attach.
type Side int

// The two sides.
const (
	SideService = Side(service)
	SideDevice  = Side(device)
)

// ErrNotAttached is Attach's error: the stream is unknown or over, or that
// side has joined already (its token is spent).
var ErrNotAttached = errors.New("relay: no stream waiting for that side")

// Attach makes conn side s of stream id without a request to the streaming
// endpoint: conn is a stream of a session (wire.SubprotocolMux) whose
// headers were exchanged, and carries from its first byte what an upgraded
// WebSocket carries, the side's frames masked, tether-stream.v1's
// end-of-stream marker included when tether is set. The side's token is
// spent, so nothing else can join in its place. As ServeHTTP, Attach
// returns at once when conn waits for the other side, and once the
// stream ended when the other side was waiting (the caller's goroutine
// runs the relay). On ErrNotAttached conn is the caller's still.
func (r *Relay) Attach(id string, s Side, conn net.Conn, tether bool) error {
	sd := side(s)
	r.mu.Lock()
	st := r.streams[id]
	if r.closed || st == nil || st.ended || st.pipe != nil || !time.Now().Before(st.Expires) {
		r.mu.Unlock()
		return ErrNotAttached
	}
	tok := st.ServiceToken
	if sd == device {
		tok = st.DeviceToken
	}
	if ref, ok := r.tokens[tok]; !ok || ref.st != st {
		r.mu.Unlock()
		return ErrNotAttached
	}
	delete(r.tokens, tok)
	r.wg.Add(1)
	defer r.wg.Done()
	r.mu.Unlock()
	p := newPeer(sd, conn, nil, r.wtimeout)
	p.tether = tether
	r.join(st, p)
	return nil
}
