package wsconn

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// closeTimeout bounds how long Close waits to send its close frame, so
// a peer that stopped reading cannot hold Close up.
const closeTimeout = time.Second

// ErrStreamCut is in the chain of every *CloseError: errors.Is tells a
// stream that was cut from one that ended cleanly.
var ErrStreamCut = errors.New("stream cut")

// Close codes Tether's ends send or report beyond those of RFC 6455.
const (
	// CodeGoingAway (1001) is sent by an end that stops while the stream
	// is open (a hub, an agent or a forwarder shutting down), and by the
	// hub to the side whose peer disconnected.
	CodeGoingAway = 1001
	// CodeNoStatus (1005) is what a close frame without a code reports;
	// it is never sent.
	CodeNoStatus = 1005
	// CodeAbnormal (1006) reports a connection that ended without a
	// close frame: dropped, reset, or its peer killed. It is never sent.
	CodeAbnormal = 1006
	// CodeReset (4000, in the range RFC 6455 leaves to applications) is
	// sent by a Tether end whose local TCP connection was reset rather
	// than closed: the far end resets its own local connection in turn.
	CodeReset = 4000
)

// CloseError is what Read returns when the stream was cut: the peer (or
// the hub) sent a close frame with a code other than 1000, the connection
// ended without a close frame (Code is CodeAbnormal and Err the network
// error), or the peer broke the protocol (Code 1002, sent by this end,
// and Err is ErrProtocol). Its chain holds ErrStreamCut and Err, never
// io.EOF.
type CloseError struct {
	Code   int    // the close code received, or sent by this end for 1002 and Abort
	Reason string // the close frame's reason, or what broke the protocol
	Err    error  // the cause when no close frame said it; may be nil
}

func (e *CloseError) Error() string {
	switch {
	case e.Code == CodeAbnormal && e.Err != nil:
		return "stream cut: the connection ended without a close frame: " + e.Err.Error()
	case e.Code == CodeAbnormal:
		return "stream cut: the connection ended without a close frame"
	case e.Err != nil:
		return "stream cut: " + e.Err.Error() + ": " + e.Reason
	case e.Reason != "":
		return "stream cut: close " + strconv.Itoa(e.Code) + " " + strconv.Quote(e.Reason)
	}
	return "stream cut: close " + strconv.Itoa(e.Code)
}

// Unwrap yields ErrStreamCut and the cause.
func (e *CloseError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrStreamCut}
	}
	return []error{ErrStreamCut, e.Err}
}

// cleanClose reports whether a close frame with code ends the stream
// cleanly: 1000, or no code at all, which is how browsers and many
// libraries close normally. The hub never sends a close frame without a
// code of its own; one that reaches a side came from its peer.
func cleanClose(code int) bool {
	return code == int(ws.StatusNormalClosure) || code == CodeNoStatus
}

// Close sends a close frame (1000) if none was sent yet, waiting at most a
// second for it to go out, and closes the connection. A connection from a
// Pool whose hub selected SubprotocolReuse goes back to the pool instead,
// once the hub's close frame came back (within that second). It is
// idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		c.setEnd(nil)
		defer c.markDone()
		// A short deadline first: it also unblocks a Write stuck on a peer
		// that stopped reading, which holds the write lock.
		c.nc.SetWriteDeadline(time.Now().Add(closeTimeout))
		var body [2]byte
		ws.PutCloseFrameBody(body[:], ws.StatusNormalClosure, "")
		_ = c.writeControl(ws.OpClose, body[:])
		if c.pool != nil && c.reuse && c.awaitClose() {
			c.release()
			return
		}
		// The raw TCP conn, not the TLS one: the close frame already said
		// goodbye, and tls.Conn.Close would wait up to 5 s to send its
		// close_notify to a peer that may not be reading.
		c.closeErr = c.raw.Close()
	})
	return c.closeErr
}

// maxReason is the longest reason a close frame carries (RFC 6455 §5.5:
// 125 bytes of payload, two of them the code).
const maxReason = ws.MaxControlFramePayloadSize - 2

// Abort ends the stream as a failure: it sends a close frame with code
// and reason, unless one was sent already, and closes the connection,
// which no Pool keeps. The peer's Read then returns a *CloseError with
// that code, and its end resets its own local connection. code must be
// one a peer may receive and not 1000, which is Close's: 1001 to 1003,
// 1007 to 1014, or 3000 to 4999 (CodeReset for a local connection that
// was reset); any other returns an error and does nothing. A reason
// longer than a close frame holds (123 bytes) is cut short. Abort after
// Close, or after the stream ended, just closes.
func (c *Conn) Abort(code int, reason string) error {
	if !abortCode(code) {
		return fmt.Errorf("wsconn: Abort with close code %d: want 1001-1003, 1007-1014 or 3000-4999", code)
	}
	ce := &CloseError{Code: code, Reason: truncateReason(reason)}
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		c.setEnd(ce)
		defer c.markDone()
		c.nc.SetWriteDeadline(time.Now().Add(closeTimeout))
		_ = c.writeControl(ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), ce.Reason))
		c.closeErr = c.raw.Close()
	})
	return c.closeErr
}

// abortCode reports whether code may go in Abort's close frame.
func abortCode(code int) bool {
	switch {
	case code >= 1001 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// truncateReason cuts s to what a close frame holds, dropping a rune the
// cut would split.
func truncateReason(s string) string {
	if len(s) <= maxReason {
		return s
	}
	s = s[:maxReason]
	for i := 1; i < utf8.UTFMax && len(s) > 0; i++ {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// awaitClose waits, after this side's close frame went out, for the
// peer's, and reports whether the connection ended cleanly: both close
// frames whole, nothing read past them. A Read in progress (or the watch
// after the end-of-stream marker) sees the frame; otherwise Close reads
// for it itself, dropping data the caller no longer wants.
func (c *Conn) awaitClose() bool {
	c.wmu.Lock()
	sent := c.closeSent && !c.wbroken
	c.wmu.Unlock()
	if !sent {
		return false
	}
	deadline := time.Now().Add(closeTimeout)
	if !c.peerEOF.Load() && c.rmu.TryLock() {
		c.nc.SetReadDeadline(deadline)
		for c.rerr == nil {
			if !c.inPayload {
				if c.readHeader() != nil {
					break
				}
				continue
			}
			if c.h.OpCode.IsControl() {
				c.readControl()
				continue
			}
			if _, err := c.r.Discard(int(c.left)); err != nil {
				c.setReadErr(err)
				break
			}
			c.left, c.inPayload = 0, false
		}
		c.rmu.Unlock()
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-c.readEnd:
	case <-t.C:
		return false
	}
	if !c.gotClose.Load() {
		return false
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.r.Buffered() == 0
}

// release hands the connection back to its pool. From here on the Conn
// must not touch it.
func (c *Conn) release() {
	c.dmu.Lock()
	c.released = true
	c.dmu.Unlock()
	c.nc.SetDeadline(time.Time{})
	c.pool.put(c.key, &pooled{nc: c.nc, raw: c.raw, batch: c.batch, since: time.Now()})
}
