package relay

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wsframe"
)

const (
	// bufSize is the buffer a data frame is relayed through: 256 KiB, the
	// best size measured (docs/benchmarks.md), so the 256 KiB frames
	// wsconn sends (header + 262,130 bytes) pass in one piece.
	bufSize = 256 << 10
	// hdrRoom is kept free in front of the payload for the largest
	// unmasked header, so header and payload go out in one Write.
	hdrRoom = 10
)

// bufPool holds relay buffers. A direction takes one only while a data
// frame is in flight, so idle streams (an SSH session between keystrokes)
// hold no buffer; Get and Put do not allocate in the steady state.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, bufSize)
	return &b
}}

var errProtocol = errors.New("websocket protocol error")

// noMask is the zero key of a session stream's frames (wsconn.OnSession):
// masking with it changes nothing, so it is skipped.
var noMask [4]byte

// pipe relays between the two sides of a paired stream.
type pipe struct {
	r      *Relay
	st     *stream
	peers  [2]*peer // indexed by side
	paired time.Time

	once     sync.Once
	closedBy string
	reason   string

	// mu guards the half-close state: which sides sent their marker, and
	// who was first.
	mu     sync.Mutex
	eof    [2]bool
	halfBy string

	// delivered counts payload bytes written to each side, live, for
	// Streams (the copy loops' own totals are only known at the end).
	delivered [2]atomic.Int64
	// active is when data last crossed, in Unix nanoseconds, for the
	// idle timeout; untouched when there is none.
	active atomic.Int64
	// stopped is set once stop ran: a copy loop that sees it stops
	// relaying and, for a side that may reuse its conn, only drains.
	stopped atomic.Bool
	// accepted, when set (AttachEarly), says whether and when the device
	// accepted the stream: a stream it did not accept ends unpaired.
	accepted func() (time.Time, bool)
	// tap, when set (Options.Tap), sees the payload relayed each way.
	tap Tap
}

// run relays until either side ends and returns the stream's Info.
func (pp *pipe) run() Info {
	var (
		wg                  sync.WaitGroup
		toDevice, toService int64
	)
	stopIdle := pp.watchIdle()
	if pp.r.tap != nil {
		pp.tap = pp.r.tap(pp.st.Stream)
	}
	// One direction runs on this goroutine: a goroutine less per stream,
	// and one stack less to grow into the TLS write path.
	wg.Add(2)
	go pp.serviceToDevice(&wg, &toDevice)
	pp.deviceToService(&wg, &toService)
	wg.Wait()
	stopIdle()
	recorded := false
	if pp.tap != nil {
		pp.tap.Close()
		if r, ok := pp.tap.(interface{ Recorded() bool }); ok {
			recorded = r.Recorded()
		}
	}
	// Once a copy loop ended, stop was called; wait until it returned, so
	// that it has done with both conns before they are reused or closed.
	pp.once.Do(func() {})
	st := pp.st
	pp.r.log.Debug("stream ended", "stream", st.ID, "device", st.DeviceID, "name", st.Name,
		"by", pp.closedBy, "reason", pp.reason, "toDevice", toDevice, "toService", toService)
	info := Info{
		ID: st.ID, DeviceID: st.DeviceID, Name: st.Name,
		Opened: st.opened, Paired: pp.paired, Closed: time.Now(),
		BytesToDevice: toDevice, BytesToService: toService,
		ClosedBy: pp.closedBy, Reason: pp.reason, PairedOK: true,
		HalfClosedBy: pp.halfClosedBy(), Recorded: recorded,
	}
	if pp.accepted != nil {
		if at, ok := pp.accepted(); ok {
			info.Paired = at
		} else {
			// What went to the device before it said no was discarded.
			info.Paired, info.PairedOK = time.Time{}, false
			info.BytesToDevice, info.BytesToService = 0, 0
		}
	}
	return info
}

func (pp *pipe) halfClosedBy() string {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.halfBy
}

func (pp *pipe) serviceToDevice(wg *sync.WaitGroup, n *int64) {
	defer wg.Done()
	*n = pp.copy(pp.peers[service], pp.peers[device])
}

func (pp *pipe) deviceToService(wg *sync.WaitGroup, n *int64) {
	defer wg.Done()
	*n = pp.copy(pp.peers[device], pp.peers[service])
}

// copy relays frames from src to dst until the stream ends, and returns the
// payload bytes it delivered. Once the hub sent src its close frame, copy
// reads on until src answers with its own or the close timeout passes (RFC
// 6455 §7.1.1), so that src sees a close handshake, not a dropped
// connection, and a conn that may carry another stream after this one
// (tether-stream.v2) is at a frame boundary for the next request.
func (pp *pipe) copy(src, dst *peer) int64 {
	n := pp.copyFrames(src, dst)
	// Whatever ended copyFrames called stop or saw it begun (another
	// goroutine may still be sending src its close frame): wait until it
	// returned, so that sentClose says whether src was sent one.
	pp.once.Do(func() {})
	if src.sentClose.Load() && !src.gotClose.Load() && !src.bad.Load() {
		src.drain()
	}
	return n
}

// copyFrames relays frames from src to dst until the stream ends, and
// returns the payload bytes it delivered. Whatever ends it ends the whole
// stream, but for src's end-of-stream marker relayed to a dst that knows
// it: then it goes on reading src's control frames (a close, pings) until
// the end.
func (pp *pipe) copyFrames(src, dst *peer) (relayed int64) {
	dir := src.side.String() + "->" + dst.side.String()
	var (
		hbuf [wsframe.MaxHeaderSize]byte
		h    ws.Header
		ctrl [ws.MaxControlFramePayloadSize]byte
		eof  bool  // src sent its marker
		msg  int64 // bytes of the data message in progress, for MaxMessage
	)
	for {
		if pp.stopped.Load() {
			return relayed
		}
		if err := wsframe.ReadHeader(src.r, &hbuf, &h); err != nil {
			pp.readFailed(src, dir, err)
			return relayed
		}
		if err := wsframe.Check(&h, true); err != nil {
			pp.protocolError(src, dir, err.Error())
			return relayed
		}
		switch {
		case h.OpCode.IsData() && eof:
			pp.protocolError(src, dir, "data frame after the end-of-stream marker")
			return relayed
		case h.OpCode.IsData() && pp.r.messageTooBig(&msg, h):
			src.bad.Store(true) // its payload is left unread
			pp.tooBig(src, dir)
			return relayed
		case wsframe.IsMarker(&h) && src.tether:
			pp.touch()
			if !pp.halfClose(src, dst, dir) {
				return relayed
			}
			eof = true
			continue
		case wsframe.IsMarker(&h) && dst.tether:
			// From a side without the subprotocol an empty frame is just no
			// data; passed on, dst would read it as the end of the stream.
			continue
		case h.OpCode.IsData():
			n, err := pp.relayData(src, dst, h, dir)
			relayed += n
			if err != nil {
				return relayed
			}
			continue
		}
		payload := ctrl[:h.Length]
		if _, err := io.ReadFull(src.r, payload); err != nil {
			pp.readFailed(src, dir, err)
			return relayed
		}
		ws.Cipher(payload, h.Mask, 0)
		switch h.OpCode {
		case ws.OpPing:
			// Answered here: the peer is not the other side's business.
			if err := src.writeControl(ws.OpPong, payload); err != nil {
				pp.writeFailed(src, dir, err)
				return relayed
			}
		case ws.OpClose:
			if err := wsframe.CheckClose(payload); err != nil {
				pp.protocolError(src, dir, err.Error())
				return relayed
			}
			src.gotClose.Store(true)
			pp.closeFrom(src, payload)
			return relayed
		}
		// Pongs are dropped: the relay sends no pings of its own.
	}
}

// relayData relays one data frame, in pieces when it is larger than the
// buffer or than what dst takes now (a session stream's send window): the
// first piece keeps the frame's opcode, the others are
// continuations, and only the last keeps its FIN (RFC 6455 §5.4 lets an
// intermediary refragment when no extension is in use). It returns the
// payload bytes written to dst and a non-nil error once the stream ended.
func (pp *pipe) relayData(src, dst *peer, h ws.Header, dir string) (int64, error) {
	op, left, off := h.OpCode, h.Length, 0
	var relayed int64
	for {
		// Each piece is what dst takes now, and only then is a buffer
		// taken: a session stream whose reader stalled leaves no piece
		// read and waiting here, its bytes left in src's window.
		room, err := dst.room(bufSize)
		if err != nil {
			src.skip = left
			pp.writeFailed(dst, dir, err)
			return relayed, err
		}
		n := int(min(left, int64(max(room, hdrRoom+1)-hdrRoom)))
		bp := bufPool.Get().(*[]byte)
		buf := *bp
		payload := buf[hdrRoom : hdrRoom+n]
		if _, err := io.ReadFull(src.r, payload); err != nil {
			bufPool.Put(bp)
			pp.readFailed(src, dir, err)
			return relayed, err
		}
		if h.Mask != noMask {
			ws.Cipher(payload, h.Mask, off)
		}
		if pp.tap != nil {
			pp.tap.Data(dst.side == device, payload)
		}
		off += n
		left -= int64(n)
		start := hdrRoom - wsframe.HeaderSize(n, false)
		wsframe.PutHeader(buf[start:], op, h.Fin && left == 0, n)
		dst.wmu.Lock()
		err = dst.write(buf[start : hdrRoom+n])
		dst.wmu.Unlock()
		bufPool.Put(bp)
		if err != nil {
			// What is left of the frame is still unread: a drain skips it.
			src.skip = left
			pp.writeFailed(dst, dir, err)
			return relayed, err
		}
		relayed += int64(n)
		pp.delivered[dst.side].Add(int64(n))
		pp.touch()
		if left == 0 {
			return relayed, nil
		}
		op = ws.OpContinuation
	}
}

// halfClose handles src's end-of-stream marker. To a dst that knows the
// marker it is passed on and the stream goes on the other way; once both
// sides sent theirs, nothing more can flow and the stream ends with 1000 to
// both. To a dst without the subprotocol, closing is the only EOF there is:
// the stream ends as if src had closed. It reports whether copy goes on.
func (pp *pipe) halfClose(src, dst *peer, dir string) bool {
	// src is recorded as first before its marker goes out: once dst has
	// it, dst may answer with its own, and that one's goroutine must find
	// src recorded.
	pp.firstHalf(src)
	if !dst.tether {
		bye := ws.NewCloseFrameBody(ws.StatusNormalClosure, "")
		pp.stop(src.side.String(), "end-of-stream marker to a peer without "+Subprotocol, [2][]byte{bye, bye})
		return false
	}
	// The flag that src's marker went on is set after the marker went
	// out, so that whichever side sees both flags set knows both markers
	// are on their way ahead of the close frames stop sends.
	if err := dst.writeEOF(); err != nil {
		pp.writeFailed(dst, dir, err)
		return false
	}
	if both := pp.setHalf(src); both {
		bye := ws.NewCloseFrameBody(ws.StatusNormalClosure, "")
		pp.stop(src.side.String(), "both sides sent the end-of-stream marker", [2][]byte{bye, bye})
		return false
	}
	return true
}

// firstHalf records src as the side that half-closed first, unless the
// other side was.
func (pp *pipe) firstHalf(src *peer) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.halfBy == "" {
		pp.halfBy = src.side.String()
	}
}

// setHalf records that src's marker went out and reports whether the other
// side's had.
func (pp *pipe) setHalf(src *peer) (both bool) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.eof[src.side] = true
	return pp.eof[1-src.side]
}

// closeFrom ends the stream on a close frame from src: the close goes on to
// the other side as it came, and back to src as RFC 6455 §5.5.1 asks.
func (pp *pipe) closeFrom(src *peer, payload []byte) {
	var frames [2][]byte
	frames[1-src.side] = payload
	frames[src.side] = wsframe.CloseEcho(payload)
	reason := "close frame"
	if code, text := ws.ParseCloseFrameData(payload); !code.Empty() {
		reason = fmt.Sprintf("close frame %d %q", code, text)
	}
	pp.stop(src.side.String(), reason, frames)
}

// readFailed ends the stream when reading src fails: src dropped, or the
// stream is already ending and its conn was closed.
func (pp *pipe) readFailed(src *peer, dir string, err error) {
	src.bad.Store(true)
	pp.endBy(src, nil, fmt.Sprintf("%s: read: %v", dir, err))
}

// writeFailed ends the stream when writing to dst fails or times out.
func (pp *pipe) writeFailed(dst *peer, dir string, err error) {
	pp.endBy(dst, nil, fmt.Sprintf("%s: write: %v", dir, err))
}

func (pp *pipe) protocolError(src *peer, dir, what string) {
	src.bad.Store(true)
	pp.endBy(src, ws.NewCloseFrameBody(ws.StatusProtocolError, what), fmt.Sprintf("%s: %v: %s", dir, errProtocol, what))
}

// endBy ends the stream because of side s, for reason: s is sent the
// close frame body own (nil: none, s is gone or broken), the other side
// 1001, as for any peer that went away.
func (pp *pipe) endBy(s *peer, own []byte, reason string) {
	var frames [2][]byte
	frames[s.side] = own
	frames[1-s.side] = ws.NewCloseFrameBody(ws.StatusGoingAway, "peer disconnected")
	pp.stop(s.side.String(), reason, frames)
}

// stop ends the stream once: it records why and sends each side its close
// frame (nil: none, that side is gone). A side that was sent one keeps its
// conn until it answers or the close timeout passes: its copy goroutine
// drains it meanwhile (see copy), and the conn is then closed or, for
// tether-stream.v2, kept for the next stream (reuseOrClose). Any other
// side's conn is closed at once, which ends its copy goroutine. Only the
// first call counts.
func (pp *pipe) stop(by, reason string, frames [2][]byte) {
	pp.once.Do(func() {
		pp.closedBy, pp.reason = by, reason
		pp.stopped.Store(true)
		for _, p := range pp.peers {
			p.closing(closeTimeout)
		}
		for s, p := range pp.peers {
			if frames[s] != nil {
				p.writeClose(frames[s])
			}
		}
		for _, p := range pp.peers {
			switch {
			case !p.sentClose.Load() || p.bad.Load():
				p.hardClose()
			case !p.gotClose.Load():
				p.conn.SetReadDeadline(time.Now().Add(pp.r.closeWait))
			}
			// A side whose close frame came first has its answer: its
			// copy goroutine is returning, and reuseOrClose closes or
			// keeps its conn.
		}
	})
}
