package relay

import (
	"net"
	"time"
)

// AttachEarly makes svc and dev the two sides of stream id at once, before
// the device accepted it, so that what the service sent ahead of the
// device's answer (early data) goes to the device right behind its
// request: both are streams of sessions, as for Attach (tether-stream.v1,
// end-of-stream marker included). Both tokens are spent. The relay runs
// on a goroutine of its own and AttachEarly returns at once.
//
// The caller gates the two conns: dev's reads return the device's frames
// only once it accepted (an error otherwise, which ends the stream), and
// svc's writes wait until the service was told. accepted says, once the
// stream ended, whether and when the device accepted; a stream it did not
// accept is reported unpaired, with no bytes. On ErrNotAttached both
// conns are the caller's still.
func (r *Relay) AttachEarly(id string, svc, dev net.Conn, accepted func() (time.Time, bool)) error {
	r.mu.Lock()
	st := r.streams[id]
	if r.closed || st == nil || st.ended || st.pipe != nil || st.peers[service] != nil || st.peers[device] != nil ||
		!time.Now().Before(st.Expires) {
		r.mu.Unlock()
		return ErrNotAttached
	}
	for _, tok := range []string{st.ServiceToken, st.DeviceToken} {
		if ref, ok := r.tokens[tok]; !ok || ref.st != st {
			r.mu.Unlock()
			return ErrNotAttached
		}
	}
	delete(r.tokens, st.ServiceToken)
	delete(r.tokens, st.DeviceToken)
	st.timer.Stop()
	pp := &pipe{r: r, st: st, paired: time.Now(), accepted: accepted}
	pp.peers[service] = newPeer(service, svc, nil, r.wtimeout)
	pp.peers[device] = newPeer(device, dev, nil, r.wtimeout)
	pp.peers[service].tether, pp.peers[device].tether = true, true
	st.pipe = pp
	r.pending--
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		r.runPipe(pp)
	}()
	return nil
}
