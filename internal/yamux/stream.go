package yamux

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

type streamState int

const (
	streamInit streamState = iota
	streamSYNSent
	streamSYNReceived
	streamEstablished
	streamLocalClose
	streamRemoteClose
	streamClosed
	streamReset
)

// Stream is used to represent a logical stream
// within a session.
type Stream struct {
	recvWindow uint32
	sendWindow uint32

	id      uint32
	session *Session

	state     streamState
	stateLock sync.Mutex

	recvBuf  *recvBuffer
	recvLock sync.Mutex

	// Receive-window auto-tuning (autoTune), under recvLock: the window
	// the stream advertises (0: the config's MaxStreamWindowSize), when
	// the current epoch began and what arrived since, what was read at
	// this window, the least and the smoothed round trip measured, and the
	// probe measuring one: when its window update went, and the credit the
	// peer had before that update.
	recvTarget uint32
	epochStart time.Time
	epochRecv  uint32
	windowRead uint64
	rttMin     time.Duration
	rttSmooth  time.Duration
	probeAt    time.Time
	probeLeft  uint32
	// growthReleased: the stream is gone, and what its window grew by
	// went back to the session's budget (releaseWindowGrowth).
	growthReleased bool

	controlHdr     header
	controlErr     chan error
	controlHdrLock sync.Mutex

	sendHdr  header
	sendErr  chan error
	sendLock sync.Mutex

	recvNotifyCh chan struct{}
	sendNotifyCh chan struct{}

	readDeadline  atomic.Value // time.Time
	writeDeadline atomic.Value // time.Time

	// establishCh is notified if the stream is established or being closed.
	establishCh chan struct{}
	// openTimer runs StreamOpenTimeout for a stream this side opened; it
	// is stopped once the peer acknowledged it.
	openTimer *time.Timer

	// closeTimer is set with stateLock held to honor the StreamCloseTimeout
	// setting on Session.
	closeTimer *time.Timer
}

// newStream is used to construct a new stream within
// a given session for an ID
func newStream(session *Session, id uint32, state streamState) *Stream {
	s := &Stream{
		id:           id,
		session:      session,
		state:        state,
		controlHdr:   header(make([]byte, headerSize)),
		controlErr:   make(chan error, 1),
		sendHdr:      header(make([]byte, headerSize)),
		sendErr:      make(chan error, 1),
		recvWindow:   initialStreamWindow,
		sendWindow:   initialStreamWindow,
		recvNotifyCh: make(chan struct{}, 1),
		sendNotifyCh: make(chan struct{}, 1),
		establishCh:  make(chan struct{}, 1),
	}
	s.readDeadline.Store(time.Time{})
	s.writeDeadline.Store(time.Time{})
	return s
}

// Session returns the associated stream session
func (s *Stream) Session() *Session {
	return s.session
}

// StreamID returns the ID of this stream
func (s *Stream) StreamID() uint32 {
	return s.id
}

// Read is used to read from the stream
func (s *Stream) Read(b []byte) (n int, err error) {
	defer asyncNotify(s.recvNotifyCh)
START:

	// If the stream is closed and there's no data buffered, return EOF
	s.stateLock.Lock()
	switch s.state {
	case streamLocalClose:
		// LocalClose only prohibits further local writes. Handle reads normally.
	case streamRemoteClose:
		fallthrough
	case streamClosed:
		s.recvLock.Lock()
		if s.recvBuf == nil || s.recvBuf.Len() == 0 {
			s.recvLock.Unlock()
			s.stateLock.Unlock()
			return 0, io.EOF
		}
		s.recvLock.Unlock()
	case streamReset:
		s.stateLock.Unlock()
		return 0, ErrConnectionReset
	}
	s.stateLock.Unlock()

	// If there is no data available, block
	s.recvLock.Lock()
	if s.recvBuf == nil || s.recvBuf.Len() == 0 {
		s.recvLock.Unlock()
		goto WAIT
	}

	// Read any bytes
	n, _ = s.recvBuf.Read(b)
	s.recvLock.Unlock()

	// Send a window update potentially. The bytes read are the caller's
	// whatever becomes of it: a session failing under the update (its
	// peer gone) shows at the next Read, once what was received is read.
	// Upstream returned the update's error beside n.
	_ = s.sendWindowUpdate()
	return n, nil

WAIT:
	var timeout <-chan time.Time
	var timer *time.Timer
	readDeadline := s.readDeadline.Load().(time.Time)
	if !readDeadline.IsZero() {
		delay := time.Until(readDeadline)
		timer = time.NewTimer(delay)
		timeout = timer.C
	}
	select {
	case <-s.session.shutdownCh:
	case <-s.recvNotifyCh:
	case <-timeout:
		return 0, ErrTimeout
	}
	if timer != nil {
		if !timer.Stop() {
			<-timeout
		}
	}
	goto START
}

// Write is used to write to the stream
func (s *Stream) Write(b []byte) (n int, err error) {
	s.sendLock.Lock()
	defer s.sendLock.Unlock()
	total := 0
	for total < len(b) {
		n, err := s.write(b[total:])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// write is used to write to the stream, may return on
// a short write.
func (s *Stream) write(b []byte) (n int, err error) {
	var flags uint16
	var max uint32
	var body []byte
START:
	s.stateLock.Lock()
	switch s.state {
	case streamLocalClose:
		fallthrough
	case streamClosed:
		s.stateLock.Unlock()
		return 0, ErrStreamClosed
	case streamReset:
		s.stateLock.Unlock()
		return 0, ErrConnectionReset
	}
	s.stateLock.Unlock()

	// If there is no data available, block
	window := atomic.LoadUint32(&s.sendWindow)
	if window == 0 {
		goto WAIT
	}

	// Determine the flags if any
	flags = s.sendFlags()

	// Send up to our send window
	max = min(window, uint32(len(b)))
	body = b[:max]

	// Send the header
	s.sendHdr.encode(typeData, flags, s.id, max)
	if err = s.session.writeFrame(s.sendHdr, body, s.sendErr); err != nil {
		if errors.Is(err, ErrSessionShutdown) || errors.Is(err, ErrConnectionWriteTimeout) {
			// Message left in ready queue, header re-use is unsafe.
			s.sendHdr = header(make([]byte, headerSize))
		}
		return 0, err
	}

	// Reduce our send window
	atomic.AddUint32(&s.sendWindow, ^uint32(max-1))

	// Unlock
	return int(max), err

WAIT:
	var timeout <-chan time.Time
	var timer *time.Timer
	writeDeadline := s.writeDeadline.Load().(time.Time)
	if !writeDeadline.IsZero() {
		delay := time.Until(writeDeadline)
		timer = time.NewTimer(delay)
		timeout = timer.C
	}
	select {
	case <-s.session.shutdownCh:
	case <-s.sendNotifyCh:
	case <-timeout:
		return 0, ErrTimeout
	}
	if timer != nil {
		if !timer.Stop() {
			<-timeout
		}
	}
	goto START
}

// SendWindow waits until a Write can send without waiting for the peer,
// and returns how many bytes it can: the stream's send window. It waits
// as a Write does, and ends as one would: the stream closed or reset, the
// session gone, the write deadline passed. A relay asks it before reading
// what it passes on, so that it reads no more than the peer takes now
// instead of holding what it read while the peer does not read.
func (s *Stream) SendWindow() (int, error) {
	s.sendLock.Lock()
	defer s.sendLock.Unlock()
	for {
		s.stateLock.Lock()
		state := s.state
		s.stateLock.Unlock()
		switch state {
		case streamLocalClose, streamClosed:
			return 0, ErrStreamClosed
		case streamReset:
			return 0, ErrConnectionReset
		}
		if window := atomic.LoadUint32(&s.sendWindow); window > 0 {
			return int(window), nil
		}
		var timeout <-chan time.Time
		var timer *time.Timer
		if deadline := s.writeDeadline.Load().(time.Time); !deadline.IsZero() {
			timer = time.NewTimer(time.Until(deadline))
			timeout = timer.C
		}
		select {
		case <-s.session.shutdownCh:
			if timer != nil {
				timer.Stop()
			}
			return 0, ErrSessionShutdown
		case <-s.sendNotifyCh:
		case <-timeout:
			return 0, ErrTimeout
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// sendFlags determines any flags that are appropriate
// based on the current stream state
func (s *Stream) sendFlags() uint16 {
	s.stateLock.Lock()
	defer s.stateLock.Unlock()
	var flags uint16
	switch s.state {
	case streamInit:
		flags |= flagSYN
		s.state = streamSYNSent
	case streamSYNReceived:
		flags |= flagACK
		s.state = streamEstablished
	}
	return flags
}

// sendWindowUpdate potentially sends a window update enabling
// further writes to take place. Must be invoked with the lock.
func (s *Stream) sendWindowUpdate() error {
	return s.sendUpdate(true)
}

// sendAck acknowledges a stream the peer opened, as the window update
// sendWindowUpdate sends, but without waiting for it to be written:
// nothing of the stream's can go out before it, and the acceptor goes on
// with the stream at once rather than after a hand-off to the writer and
// back.
func (s *Stream) sendAck() error {
	return s.sendUpdate(false)
}

func (s *Stream) sendUpdate(wait bool) error {
	s.controlHdrLock.Lock()
	defer s.controlHdrLock.Unlock()

	// Determine the delta update
	s.recvLock.Lock()
	max := s.recvWindowSize()
	var bufLen uint32
	if s.recvBuf != nil {
		bufLen = uint32(s.recvBuf.Len())
	}
	delta := (max - bufLen) - s.recvWindow

	// Determine the flags if any
	flags := s.sendFlags()

	// Check if we can omit the update
	if delta < (max/2) && flags == 0 {
		s.recvLock.Unlock()
		return nil
	}
	delta += s.autoTune(delta)

	// Update our window
	s.recvWindow += delta
	s.recvLock.Unlock()

	// Send the header
	if !wait {
		hdr := header(make([]byte, headerSize))
		hdr.encode(typeWindowUpdate, flags, s.id, delta)
		return s.session.sendNoWait(hdr)
	}
	s.controlHdr.encode(typeWindowUpdate, flags, s.id, delta)
	if err := s.session.writeFrame(s.controlHdr, nil, s.controlErr); err != nil {
		if errors.Is(err, ErrSessionShutdown) || errors.Is(err, ErrConnectionWriteTimeout) {
			// Message left in ready queue, header re-use is unsafe.
			s.controlHdr = header(make([]byte, headerSize))
		}
		return err
	}
	return nil
}

// recvWindowSize is the receive window the stream advertises: the
// config's MaxStreamWindowSize until autoTune grew it. Called with
// recvLock held.
func (s *Stream) recvWindowSize() uint32 {
	if s.recvTarget == 0 {
		return s.session.config.MaxStreamWindowSize
	}
	return s.recvTarget
}

// autoTune grows the receive window of a stream whose reader keeps up with
// a sender the window holds back, as HTTP/2 and QUIC implementations do: a
// fixed window caps a stream at a window per round trip (256 KiB at 50 ms
// is 42 Mbit/s), however fast the link and the reader. It runs when an
// update is due, with the bytes read since the last one (consumed); when
// those that also arrived since came at a pace that reads a whole window
// within four round trips, and the stream read a few windows at this one,
// the window doubles, up to StreamWindowGrowthLimit, and the update grants
// the growth too. Only a Read sends such an update, so a reader that stops
// reading stops the growth: a stalled stream holds at most the window it
// had. yamux's updates carry a delta, so a larger window needs nothing of
// the peer. It returns what the window grew by. Called with recvLock held.
func (s *Stream) autoTune(consumed uint32) uint32 {
	window := s.recvWindowSize()
	limit := s.session.config.StreamWindowGrowthLimit
	if limit <= window || consumed == 0 {
		return 0
	}
	now := time.Now()
	if s.probeAt.IsZero() {
		s.probeAt, s.probeLeft = now, s.recvWindow
	}
	start, arrived := s.epochStart, s.epochRecv
	s.epochStart, s.epochRecv = now, 0
	s.windowRead += uint64(consumed)
	// A window grows only once the stream read windowGrowthAfter windows
	// at it: a stream's first bytes (a request, the burst that fills a
	// relay before its far side stalls) come fast whatever the link, and
	// would otherwise leave a stream that stalls soon after holding a
	// grown window.
	if start.IsZero() || s.rttMin == 0 || s.windowRead < windowGrowthAfter*uint64(window) {
		return 0
	}
	// The pace is what both arrived and was read in the epoch: a reader
	// draining bytes that arrived before it reads fast whatever the
	// sender's pace (a relay whose far side just opened, say).
	paced := min(consumed, arrived)
	// A window's worth at this pace takes elapsed × window ÷ paced; it
	// grows when that is under four round trips, as quic-go's does: a
	// window-limited stream reads a window a round trip plus its queues.
	// The round trip is the smoothed one, bounded by four times the
	// least (README.md says why both).
	rtt := s.rttSmooth
	if rtt > 4*s.rttMin {
		rtt = 4 * s.rttMin
	}
	if float64(now.Sub(start))*float64(window) >= 4*float64(rtt)*float64(paced) {
		return 0
	}
	grown := limit
	if window < limit/2 {
		grown = 2 * window
	}
	if s.growthReleased || !s.session.reserveWindowGrowth(grown-window) {
		return 0
	}
	s.recvTarget = grown
	s.windowRead = 0
	return grown - window
}

// releaseWindowGrowth gives back to the session what this stream's window
// grew by, once the stream is gone: the session's budget is for streams
// that hold their windows. It grows no more after.
func (s *Stream) releaseWindowGrowth() {
	s.recvLock.Lock()
	defer s.recvLock.Unlock()
	if s.growthReleased {
		return
	}
	s.growthReleased = true
	if base := s.session.config.MaxStreamWindowSize; s.recvTarget > base {
		s.session.windowGrown.Add(-uint64(s.recvTarget - base))
	}
}

// windowGrowthAfter is how many windows a stream reads at a window before
// autoTune may double it. At 256 KiB and 50 ms, a stream reads the 1 MiB
// in 200 ms, and a bulk stream reaches 1 MiB (100 Mbit/s at 50 ms) in
// about half a second.
const windowGrowthAfter = 4

// probeRTT completes the probe of the round trip that autoTune started,
// once a frame of length bytes goes past the credit the peer had before
// the probe's update: the peer sent it after that update reached it, so
// the time since the update is a round trip or more, and a round trip
// when the peer was waiting for the update, as one the window holds back
// is. The least of these is the stream's round trip. Called with
// recvLock held.
func (s *Stream) probeRTT(length uint32) {
	if s.probeAt.IsZero() {
		return
	}
	if length <= s.probeLeft {
		s.probeLeft -= length
		return
	}
	rtt := time.Since(s.probeAt)
	if s.rttMin == 0 || rtt < s.rttMin {
		s.rttMin = rtt
	}
	if s.rttSmooth == 0 {
		s.rttSmooth = rtt
	} else {
		s.rttSmooth += (rtt - s.rttSmooth) / 8
	}
	s.probeAt = time.Time{}
}

// sendClose is used to send a FIN
func (s *Stream) sendClose() error {
	s.controlHdrLock.Lock()
	defer s.controlHdrLock.Unlock()

	flags := s.sendFlags()
	flags |= flagFIN
	s.controlHdr.encode(typeWindowUpdate, flags, s.id, 0)
	if err := s.session.writeFrame(s.controlHdr, nil, s.controlErr); err != nil {
		if errors.Is(err, ErrSessionShutdown) || errors.Is(err, ErrConnectionWriteTimeout) {
			// Message left in ready queue, header re-use is unsafe.
			s.controlHdr = header(make([]byte, headerSize))
		}
		return err
	}
	return nil
}

// Close is used to close the stream
func (s *Stream) Close() error {
	closeStream := false
	s.stateLock.Lock()
	switch s.state {
	// Opened means we need to signal a close
	case streamSYNSent:
		fallthrough
	case streamSYNReceived:
		fallthrough
	case streamEstablished:
		s.state = streamLocalClose
		goto SEND_CLOSE

	case streamLocalClose:
	case streamRemoteClose:
		s.state = streamClosed
		closeStream = true
		goto SEND_CLOSE

	case streamClosed:
	case streamReset:
	default:
		panic("unhandled state")
	}
	s.stateLock.Unlock()
	return nil
SEND_CLOSE:
	// This shouldn't happen (the more realistic scenario to cancel the
	// timer is via processFlags) but just in case this ever happens, we
	// cancel the timer to prevent dangling timers.
	if s.closeTimer != nil {
		s.closeTimer.Stop()
		s.closeTimer = nil
	}

	// If we have a StreamCloseTimeout set we start the timeout timer.
	// We do this only if we're not already closing the stream since that
	// means this was a graceful close.
	//
	// This prevents memory leaks if one side (this side) closes and the
	// remote side poorly behaves and never responds with a FIN to complete
	// the close. After the specified timeout, we clean our resources up no
	// matter what.
	if !closeStream && s.session.config.StreamCloseTimeout > 0 {
		s.closeTimer = time.AfterFunc(
			s.session.config.StreamCloseTimeout, s.closeTimeout)
	}

	s.stateLock.Unlock()
	s.sendClose()
	s.notifyWaiting()
	if closeStream {
		s.session.closeStream(s.id)
	}
	return nil
}

// Reset ends the stream at once both ways, as a TCP reset does: the peer
// is sent the protocol's RST flag, what was received and not read is
// dropped, and reads and writes fail with ErrConnectionReset from now on.
// Upstream's protocol has the flag, but v0.1.2 sends it only when a
// stream's close times out; Close sends FIN, which leaves the peer free to
// write on into a buffer that nobody reads until it closes too. Reset
// after Close aborts what the close left open; of a stream that ended
// (closed both ways, or reset) it does nothing.
func (s *Stream) Reset() error {
	s.stateLock.Lock()
	switch s.state {
	case streamClosed, streamReset:
		s.stateLock.Unlock()
		return nil
	}
	s.state = streamReset
	if s.closeTimer != nil {
		s.closeTimer.Stop()
		s.closeTimer = nil
	}
	s.stateLock.Unlock()

	s.recvLock.Lock()
	s.recvBuf = nil
	s.recvLock.Unlock()
	s.notifyWaiting()
	s.session.closeStream(s.id)

	hdr := header(make([]byte, headerSize))
	hdr.encode(typeWindowUpdate, flagRST, s.id, 0)
	return s.session.sendNoWait(hdr)
}

// closeTimeout is called after StreamCloseTimeout during a close to
// close this stream.
func (s *Stream) closeTimeout() {
	// Close our side forcibly
	s.forceClose()

	// Free the stream from the session map
	s.session.closeStream(s.id)

	// Send a RST so the remote side closes too.
	s.sendLock.Lock()
	defer s.sendLock.Unlock()
	hdr := header(make([]byte, headerSize))
	hdr.encode(typeWindowUpdate, flagRST, s.id, 0)
	_ = s.session.sendNoWait(hdr)
}

// forceClose is used for when the session is exiting
func (s *Stream) forceClose() {
	s.stateLock.Lock()
	s.state = streamClosed
	s.stateLock.Unlock()
	s.notifyWaiting()
}

// processFlags is used to update the state of the stream
// based on set flags, if any. Lock must be held
func (s *Stream) processFlags(flags uint16) error {
	s.stateLock.Lock()
	defer s.stateLock.Unlock()

	// Close the stream without holding the state lock
	closeStream := false
	defer func() {
		if closeStream {
			if s.closeTimer != nil {
				// Stop our close timeout timer since we gracefully closed
				s.closeTimer.Stop()
			}

			s.session.closeStream(s.id)
		}
	}()

	if flags&flagACK == flagACK {
		if s.state == streamSYNSent {
			s.state = streamEstablished
		}
		if s.openTimer != nil {
			s.openTimer.Stop()
		}
		asyncNotify(s.establishCh)
		s.session.establishStream(s.id)
	}
	if flags&flagFIN == flagFIN {
		switch s.state {
		case streamSYNSent:
			fallthrough
		case streamSYNReceived:
			fallthrough
		case streamEstablished:
			s.state = streamRemoteClose
			s.notifyWaiting()
		case streamLocalClose:
			s.state = streamClosed
			closeStream = true
			s.notifyWaiting()
		default:
			s.session.logger.Printf("[ERR] yamux: unexpected FIN flag in state %d", s.state)
			return ErrUnexpectedFlag
		}
	}
	if flags&flagRST == flagRST {
		s.state = streamReset
		closeStream = true
		s.notifyWaiting()
	}
	return nil
}

// notifyWaiting notifies all the waiting channels
func (s *Stream) notifyWaiting() {
	asyncNotify(s.recvNotifyCh)
	asyncNotify(s.sendNotifyCh)
	asyncNotify(s.establishCh)
}

// incrSendWindow updates the size of our send window
func (s *Stream) incrSendWindow(hdr header, flags uint16) error {
	if err := s.processFlags(flags); err != nil {
		return err
	}

	// Increase window, unblock a sender
	atomic.AddUint32(&s.sendWindow, hdr.Length())
	asyncNotify(s.sendNotifyCh)
	return nil
}

// readData is used to handle a data frame
func (s *Stream) readData(hdr header, flags uint16, conn io.Reader) error {
	if err := s.processFlags(flags); err != nil {
		return err
	}

	// Check that our recv window is not exceeded
	length := hdr.Length()
	if length == 0 {
		return nil
	}

	// Copy into buffer
	s.recvLock.Lock()

	if length > s.recvWindow {
		s.session.logger.Printf("[ERR] yamux: receive window exceeded (stream: %d, remain: %d, recv: %d)", s.id, s.recvWindow, length)
		s.recvLock.Unlock()
		return ErrRecvWindowExceeded
	}
	s.probeRTT(length)
	s.epochRecv += length

	if s.recvBuf == nil {
		// Allocated just-in-time: the first frame's read fits it exactly.
		s.recvBuf = &recvBuffer{}
	}
	// Exactly the frame's bytes, into a buffer no larger than the window.
	err := s.recvBuf.readFrame(conn, int(length), int(s.recvWindowSize()))
	if err != nil {
		s.session.logger.Printf("[ERR] yamux: Failed to read stream data: %v", err)
		s.recvLock.Unlock()
		return err
	}

	// Decrement the receive window
	s.recvWindow -= length
	s.recvLock.Unlock()

	// Unblock any readers
	asyncNotify(s.recvNotifyCh)
	return nil
}

// SetDeadline sets the read and write deadlines
func (s *Stream) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	if err := s.SetWriteDeadline(t); err != nil {
		return err
	}
	return nil
}

// SetReadDeadline sets the deadline for blocked and future Read calls.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.readDeadline.Store(t)
	asyncNotify(s.recvNotifyCh)
	return nil
}

// SetWriteDeadline sets the deadline for blocked and future Write calls
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.writeDeadline.Store(t)
	asyncNotify(s.sendNotifyCh)
	return nil
}

// Shrink is used to compact the amount of buffers utilized
// This is useful when using Yamux in a connection pool to reduce
// the idle memory utilization.
func (s *Stream) Shrink() {
	s.recvLock.Lock()
	if s.recvBuf != nil && s.recvBuf.Len() == 0 {
		s.recvBuf = nil
	}
	s.recvLock.Unlock()
}
