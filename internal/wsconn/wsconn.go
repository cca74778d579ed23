// Package wsconn is the client side of a stream on the streaming endpoint:
// it dials a wss:// bridge URL with a bearer token and presents the
// WebSocket as a net.Conn. The device and service SDKs share it.
//
// A stream is a byte stream, not a sequence of messages: Read returns the
// payload of every data frame in order, whatever its opcode and however it
// was fragmented, and every Write goes out as binary frames.
//
// A WebSocket has no half-close. Dial offers the subprotocol
// tether-stream.v1 (Subprotocol), in which an empty binary frame with FIN
// means "this side will send no more data". When the hub selects it,
// CloseWrite sends that marker and Read returns io.EOF on receiving it while
// the other direction stays open; Done tells that apart from the end of the
// whole stream. Without it (an Azure hub, an older Tether hub) io.EOF means
// the whole stream is over and CloseWrite closes the stream.
//
// A stream that ends any other way than cleanly (the peer's close frame
// with code 1000 or without a code, or the marker) is cut: Read returns a
// *CloseError, never io.EOF, so that a truncated transfer cannot pass for
// a complete one. Abort ends a stream that way on purpose.
package wsconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/batchconn"
	"github.com/tether-io/tether/wire"
)

const (
	// maxFrame is the largest frame Write sends. 256 KiB is the top of the
	// range RELAY-NOTES measured as best, and being a multiple of 16 KiB it
	// fills whole TLS records.
	maxFrame = 256 << 10
	// maxHeader is the size of a masked client header with a 64-bit length.
	maxHeader = ws.MaxHeaderSize
	// maxChunk is the payload of a full frame: header + payload == maxFrame.
	maxChunk = maxFrame - maxHeader

	// closeTimeout bounds how long Close waits to send its close frame, so
	// a peer that stopped reading cannot hold Close up.
	closeTimeout = time.Second

	// maxErrorBody bounds what is read of a rejected handshake's body.
	maxErrorBody = 64 << 10
	// errorBodyTimeout bounds reading that body when ctx has no deadline, so
	// a server that never finishes its answer cannot hang Dial.
	errorBodyTimeout = 5 * time.Second
)

// Subprotocol is the WebSocket subprotocol Dial offers. A hub selecting it
// promises to relay the end-of-stream marker (an empty binary frame with
// FIN) from a peer that speaks it too, and never to relay an empty binary
// frame with another meaning.
const Subprotocol = "tether-stream.v1"

// SubprotocolReuse is Subprotocol plus connection reuse, which a Pool
// offers: once a stream ended with a close frame each way, the connection
// is HTTP/1.1 again and carries the pool's next upgrade request, so many
// streams pay for one TLS handshake.
const SubprotocolReuse = "tether-stream.v2"

// ErrProtocol is returned by Read when the server breaks RFC 6455.
var ErrProtocol = errors.New("wsconn: websocket protocol error")

// ErrWriteClosed is returned by Write after CloseWrite. It wraps
// net.ErrClosed: like a closed conn, it is the caller's own doing.
var ErrWriteClosed = fmt.Errorf("wsconn: write after CloseWrite: %w", net.ErrClosed)

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

// ErrBadToken is returned by Dial for a token that cannot be sent in an
// HTTP header.
var ErrBadToken = errors.New("wsconn: token holds characters not allowed in a header")

// HandshakeError is returned by Dial when the server answers the upgrade
// with anything but 101. Code and Message come from the Azure-shaped JSON
// error body when there is one (Code is 0 otherwise, and Message the body's
// text).
type HandshakeError struct {
	StatusCode int
	Code       int
	Message    string
	// Header is the answer's header, when it could be read.
	Header http.Header
}

func (e *HandshakeError) Error() string {
	s := "wsconn: handshake answered HTTP " + strconv.Itoa(e.StatusCode)
	if e.Code != 0 {
		s += " (" + strconv.Itoa(e.Code) + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Dial opens url (wss://host:port/bridges/..., or ws:// without TLS) with
// "Authorization: Bearer token" and returns the stream as a *Conn. tlsConf
// may be nil (system roots); when its ServerName is empty the URL's host is
// used. ctx bounds the dial and the handshake, not the returned Conn.
func Dial(ctx context.Context, url, token string, tlsConf *tls.Config) (net.Conn, error) {
	if !validToken(token) {
		return nil, ErrBadToken
	}
	c, err := dial(ctx, url, bearer(token), tlsConf, []string{Subprotocol})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// bearer is the handshake header carrying a streaming token.
func bearer(token string) ws.HandshakeHeader {
	return ws.HandshakeHeaderString("Authorization: Bearer " + token + "\r\n")
}

// requestHeader is h as a handshake header, refusing values that would
// smuggle extra header lines into the request.
func requestHeader(h http.Header) (ws.HandshakeHeader, error) {
	for k, vs := range h {
		for _, v := range vs {
			if strings.ContainsAny(k+v, "\r\n") {
				return nil, fmt.Errorf("wsconn: header %q holds a line break", k)
			}
		}
	}
	return ws.HandshakeHeaderHTTP(h), nil
}

// dial opens a new connection to url and upgrades it, sending header and
// offering protocols.
func dial(ctx context.Context, url string, header ws.HandshakeHeader, tlsConf *tls.Config, protocols []string) (*Conn, error) {
	var (
		herr  *HandshakeError
		raw   net.Conn
		batch *batchconn.Conn
	)
	d := ws.Dialer{
		Header: header,
		// Offered, never required: a hub that selects nothing (Azure's, an
		// older Tether) gets the plain protocol, where only close ends.
		Protocols: protocols,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var nd net.Dialer
			c, err := nd.DialContext(ctx, network, addr)
			raw = c
			return c, err
		},
		TLSClient: func(conn net.Conn, host string) net.Conn {
			cfg := &tls.Config{}
			if tlsConf != nil {
				cfg = tlsConf.Clone()
			}
			if cfg.ServerName == "" {
				cfg.ServerName = host
			}
			// The upgrade is HTTP/1.1: a server must not pick h2 because
			// the caller's config offers it.
			cfg.NextProtos = []string{"http/1.1"}
			batch = batchconn.New(conn)
			return tls.Client(batch, cfg)
		},
		OnStatusError: func(status int, _ []byte, resp io.Reader) {
			herr = readHandshakeError(ctx, raw, status, resp)
		},
	}
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		if herr != nil {
			return nil, herr
		}
		return nil, fmt.Errorf("wsconn: dial %s: %w", url, err)
	}
	c := newConn(conn, br, raw, batch)
	c.halfClose = hs.Protocol == Subprotocol || hs.Protocol == SubprotocolReuse
	c.reuse = hs.Protocol == SubprotocolReuse
	return c, nil
}

// validToken keeps a token from smuggling extra header lines into the
// handshake request.
func validToken(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func readHandshakeError(ctx context.Context, raw net.Conn, status int, resp io.Reader) *HandshakeError {
	herr := &HandshakeError{StatusCode: status}
	if raw != nil {
		if _, ok := ctx.Deadline(); !ok {
			// The dialer's own deadline only exists when ctx has one.
			raw.SetReadDeadline(time.Now().Add(errorBodyTimeout))
		}
	}
	res, err := http.ReadResponse(bufio.NewReader(resp), nil)
	if err != nil {
		return herr
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
	res.Body.Close()
	herr.Header = res.Header
	herr.Code, herr.Message = wire.DecodeError(body)
	return herr
}

// Conn is one side of a stream. Read and Write may be called concurrently
// with each other; concurrent Reads (or Writes) are serialised.
type Conn struct {
	nc    net.Conn
	raw   net.Conn        // the TCP conn under nc; closed directly by Close
	batch *batchconn.Conn // nil without TLS
	// halfClose is set when the hub selected Subprotocol: the marker means
	// EOF in both directions. Fixed after Dial.
	halfClose bool
	// reuse is set when the hub selected SubprotocolReuse; pool and key say
	// where Close returns the connection after a clean close handshake.
	reuse bool
	pool  *Pool
	key   string
	// gotClose is set when the peer's close frame was read; readEnd is
	// closed when reading ended for any reason. A Close waiting to reuse
	// the connection while another goroutine reads waits on them.
	gotClose    atomic.Bool
	readEnd     chan struct{}
	readEndOnce sync.Once
	// dmu guards released: once the connection went back to the pool, the
	// deadline setters must not touch it, as another stream owns it.
	dmu      sync.Mutex
	released bool

	// peerEOF is set once the peer's end-of-stream marker was read. From
	// then on Read returns io.EOF without touching the read state, which
	// belongs to the watch goroutine (see watch).
	peerEOF atomic.Bool

	rmu  sync.Mutex
	r    *bufio.Reader
	rerr error // sticky: io.EOF after a close frame, or a broken stream
	fin  bool  // FIN bit of the current frame
	// The read state survives across Read calls so that a read deadline
	// firing in the middle of a header or a control frame loses nothing.
	hbuf   [maxHeader]byte
	hn     int   // header bytes read so far
	left   int64 // payload bytes left in the current frame
	op     ws.OpCode
	mask   [4]byte
	masked bool
	off    int // bytes of the current payload already unmasked
	ctrl   [ws.MaxControlFramePayloadSize]byte

	wmu       sync.Mutex
	wbuf      []byte // one outgoing frame, reused
	cbuf      [2 + maxHeader + ws.MaxControlFramePayloadSize]byte
	closeSent bool // no data frame may follow a close frame
	wbroken   bool // a frame went out in part: the stream is garbage now
	eofSent   bool // CloseWrite sent the marker: no data frame may follow

	closeOnce sync.Once
	closeErr  error
	// closing is set once Close or Abort began: errors from the
	// connection they close are this end's doing, not a cut.
	closing atomic.Bool
	// end says how the stream ended, set once, always before done is
	// closed: cleanEnd, or the *CloseError that cut it.
	end atomic.Pointer[ending]

	done     chan struct{} // closed when the stream is over both ways
	doneOnce sync.Once
}

var _ net.Conn = (*Conn)(nil)

func newConn(nc net.Conn, br *bufio.Reader, raw net.Conn, batch *batchconn.Conn) *Conn {
	if raw == nil {
		raw = nc
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	return &Conn{nc: nc, raw: raw, batch: batch, r: br, done: make(chan struct{}), readEnd: make(chan struct{})}
}

// Done returns a channel closed once the stream is over in both
// directions: a close frame was received or sent, Close was called, or the
// connection failed. Frames are only seen while something reads: Read, or,
// after the peer's end-of-stream marker (Read returned io.EOF, Done still
// open: writes still reach the peer), the conn itself, which goes on
// reading so that Done closes when the stream ends for good even if nobody
// calls Read again. A read deadline that passes after the marker stops that
// watch; Done then closes only on a write error or Close.
func (c *Conn) Done() <-chan struct{} { return c.done }

// markDone closes done once. Conns built without newConn (tests) have none.
func (c *Conn) markDone() {
	if c.done == nil {
		return
	}
	c.doneOnce.Do(func() { close(c.done) })
}

// ending is how a stream ended; err is nil for a clean end.
type ending struct{ err error }

var cleanEnd = &ending{}

// setEnd records how the stream ended, unless that is known already.
// err is nil for a clean end. It must come before markDone, so that Err
// is final once Done is closed.
func (c *Conn) setEnd(err error) {
	e := cleanEnd
	if err != nil {
		e = &ending{err}
	}
	c.end.CompareAndSwap(nil, e)
}

// Err reports how the stream ended: nil while it is open or after it
// ended cleanly (the peer's close frame 1000 or without a code, or this
// end's Close), the *CloseError that cut it otherwise. It is final once
// Done is closed. Read returns io.EOF after the peer's end-of-stream
// marker whatever comes next: Err tells whether the stream then ended
// cleanly.
func (c *Conn) Err() error {
	if e := c.end.Load(); e != nil {
		return e.err
	}
	return nil
}

// lost is Read's error for a connection that failed or ended without a
// close frame: a *CloseError, unless this end is closing it.
func (c *Conn) lost(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if c.closing.Load() {
		return err
	}
	return &CloseError{Code: CodeAbnormal, Err: err}
}

// setReadErr makes err Read's sticky error; the stream is over then.
// io.EOF is a clean end, a *CloseError a cut; anything else comes from
// this end closing the connection, whose Close or Abort said how it ended.
func (c *Conn) setReadErr(err error) {
	c.rerr = err
	var ce *CloseError
	switch {
	case err == io.EOF:
		c.setEnd(nil)
	case errors.As(err, &ce):
		c.setEnd(ce)
	}
	c.markDone()
	if c.readEnd != nil {
		c.readEndOnce.Do(func() { close(c.readEnd) })
	}
}

// Read reads payload bytes of data frames. It answers pings with pongs and
// returns io.EOF once the peer's close frame with code 1000 (or without a
// code) arrives, or, with Subprotocol, the peer's end-of-stream marker. Any
// other end is a *CloseError: a close frame with another code, a
// connection that ended without a close frame, a protocol error.
func (c *Conn) Read(p []byte) (int, error) {
	if c.peerEOF.Load() {
		return 0, io.EOF
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for {
		// Again under rmu: the Read that saw the marker handed the read
		// state to watch before this one got the lock.
		if c.peerEOF.Load() {
			return 0, io.EOF
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.hn < 0 { // inside a payload
			if c.op.IsControl() {
				if err := c.readControl(); err != nil {
					return 0, err
				}
				continue
			}
			if c.left == 0 {
				c.hn = 0
				continue
			}
			n := len(p)
			if int64(n) > c.left {
				n = int(c.left)
			}
			// The whole piece of the frame that fits in p: a frame comes
			// in one piece from its sender, and reading it whole lets a
			// relay pass it on in one write instead of one per TLS record.
			n, err := io.ReadFull(c.r, p[:n])
			if c.masked {
				ws.Cipher(p[:n], c.mask, c.off)
			}
			c.off += n
			c.left -= int64(n)
			if err != nil && !isTimeout(err) {
				err = c.lost(err)
				c.setReadErr(err)
			}
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if err := c.readHeader(); err != nil {
			return 0, err
		}
		if c.isMarker() {
			c.hn = 0
			c.peerEOF.Store(true)
			// Someone must keep reading: to answer pings, and to see the
			// close frame that ends the stream, so that Done closes even
			// when the caller, having seen EOF, only writes from now on.
			go c.watch()
			return 0, io.EOF
		}
	}
}

// frameBufs hold one frame's payload while WriteTo passes it on; a buffer
// is taken only when data is there, so an idle stream holds none.
var frameBufs = sync.Pool{New: func() any {
	b := make([]byte, 256<<10)
	return &b
}}

// WriteTo copies the stream to w until EOF, a frame's payload (up to
// 256 KiB) per w.Write: a relay to a local TCP connection then makes one
// write per frame rather than one per 16 KiB TLS record. io.Copy uses it.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if !c.peerEOF.Load() {
			// Wait for data before taking a buffer. An error here comes
			// back from Read below, through its own handling. Not after
			// the stream ended: the conn may carry another stream by then.
			c.rmu.Lock()
			if c.rerr == nil {
				_, _ = c.r.Peek(1)
			}
			c.rmu.Unlock()
		}
		bp := frameBufs.Get().(*[]byte)
		n, err := c.Read(*bp)
		if n > 0 {
			wn, werr := w.Write((*bp)[:n])
			total += int64(wn)
			if werr == nil && wn < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				frameBufs.Put(bp)
				return total, werr
			}
		}
		frameBufs.Put(bp)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// isMarker reports whether the header just read is the end-of-stream
// marker: an empty binary frame with FIN, on a tether-stream.v1 conn.
func (c *Conn) isMarker() bool {
	return c.halfClose && c.op == ws.OpBinary && c.fin && c.left == 0
}

// watch reads what follows the peer's end-of-stream marker until the
// stream ends: control frames are handled as Read would, and a data frame
// breaks the protocol (the hub never relays one). It owns the read state,
// which Read no longer touches once peerEOF is set.
func (c *Conn) watch() {
	for {
		if c.hn < 0 {
			if !c.op.IsControl() {
				c.protocolError("data frame after the end-of-stream marker")
				return
			}
			if err := c.readControl(); err != nil {
				return
			}
			continue
		}
		// A timeout here means the caller set a read deadline: it asked
		// for reads to stop, so the watch stops too.
		if err := c.readHeader(); err != nil {
			return
		}
	}
}

// readHeader reads and parses the next frame header. On success c.hn is -1
// and c.op, c.left, c.mask describe the payload that follows.
func (c *Conn) readHeader() error {
	need := 2
	if c.hn >= 2 {
		need = headerLen(c.hbuf[0], c.hbuf[1])
	}
	for c.hn < need {
		n, err := c.r.Read(c.hbuf[c.hn:need])
		c.hn += n
		if c.hn >= 2 {
			need = headerLen(c.hbuf[0], c.hbuf[1])
		}
		if c.hn >= need {
			break
		}
		if err != nil {
			if !isTimeout(err) {
				// Even between frames: a stream ends with a close frame,
				// so a connection that just ends was cut.
				err = c.lost(err)
				c.setReadErr(err)
			}
			return err
		}
	}
	b0, b1 := c.hbuf[0], c.hbuf[1]
	fin := b0&0x80 != 0
	c.fin = fin
	c.op = ws.OpCode(b0 & 0x0f)
	c.masked = b1&0x80 != 0
	rest := c.hbuf[2:need]
	switch l := b1 & 0x7f; l {
	case 126:
		c.left = int64(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
	case 127:
		v := binary.BigEndian.Uint64(rest)
		if v>>63 != 0 {
			return c.protocolError("frame length has its top bit set")
		}
		c.left = int64(v)
		rest = rest[8:]
	default:
		c.left = int64(l)
	}
	if c.masked {
		copy(c.mask[:], rest)
	}
	c.off = 0
	c.hn = -1
	switch {
	case b0&0x70 != 0:
		return c.protocolError("reserved bits set without an extension")
	case c.op.IsReserved():
		return c.protocolError("reserved opcode " + strconv.Itoa(int(c.op)))
	case c.op.IsControl() && (!fin || c.left > ws.MaxControlFramePayloadSize):
		return c.protocolError("fragmented or oversized control frame")
	}
	return nil
}

// headerLen is the full length of a header given its first two bytes.
func headerLen(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// readControl reads the rest of a control frame's payload and acts on it.
func (c *Conn) readControl() error {
	for c.left > 0 {
		n, err := c.r.Read(c.ctrl[c.off : c.off+int(c.left)])
		c.off += n
		c.left -= int64(n)
		if c.left == 0 {
			break
		}
		if err != nil {
			if !isTimeout(err) {
				err = c.lost(err)
				c.setReadErr(err)
			}
			return err
		}
	}
	payload := c.ctrl[:c.off]
	if c.masked {
		ws.Cipher(payload, c.mask, 0)
	}
	c.hn = 0
	switch c.op {
	case ws.OpPing:
		// A pong that fails to go out is not Read's error: the next read
		// or write meets the broken connection anyway.
		_ = c.writeControl(ws.OpPong, payload)
	case ws.OpClose:
		if len(payload) == 1 {
			return c.protocolError("close frame with a one-byte body")
		}
		// Echo the code back, as RFC 6455 §5.5.1 asks, then report EOF
		// or the cut; Close ends the TCP connection. The end is recorded
		// before the echo closes Done.
		var end error = io.EOF
		code, reason := ws.ParseCloseFrameData(payload)
		if n := closeCode(code); !cleanClose(n) {
			end = &CloseError{Code: n, Reason: reason}
			c.setEnd(end)
		} else {
			c.setEnd(nil)
		}
		if len(payload) >= 2 {
			payload = payload[:2]
		}
		_ = c.writeControl(ws.OpClose, payload)
		c.gotClose.Store(true)
		c.setReadErr(end)
		return end
	}
	return nil
}

// closeCode is a close frame's code as a number, CodeNoStatus for none.
func closeCode(code ws.StatusCode) int {
	if code.Empty() {
		return CodeNoStatus
	}
	return int(code)
}

func (c *Conn) protocolError(what string) error {
	c.setReadErr(&CloseError{Code: int(ws.StatusProtocolError), Reason: what, Err: ErrProtocol})
	var body [2 + 32]byte
	binary.BigEndian.PutUint16(body[:], uint16(ws.StatusProtocolError))
	n := copy(body[2:], "protocol error")
	_ = c.writeControl(ws.OpClose, body[:2+n])
	return c.rerr
}

// writeControl sends one control frame. A close frame is sent at most once.
func (c *Conn) writeControl(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent || c.wbroken {
		return net.ErrClosed
	}
	if op == ws.OpClose {
		c.closeSent = true
		// Sent or not, nothing more will pass either way.
		defer c.markDone()
	}
	n := putHeader(c.cbuf[:], op, true, len(payload))
	copy(c.cbuf[n:], payload)
	ws.Cipher(c.cbuf[n:n+len(payload)], c.maskOf(n), 0)
	return c.writeRaw(c.cbuf[:n+len(payload)])
}

// writeErr is the error of a data write that cannot go out. The caller
// holds wmu.
func (c *Conn) writeErr() error {
	switch {
	case c.closeSent || c.wbroken:
		return net.ErrClosed
	case c.eofSent:
		return ErrWriteClosed
	}
	return nil
}

// maskOf returns the mask putHeader just wrote, which ends at n.
func (c *Conn) maskOf(n int) (m [4]byte) {
	copy(m[:], c.cbuf[n-4:n])
	return m
}

// Write sends p as one binary frame, or as frames of 256 KiB when it is
// larger. It returns how many bytes of p went out in whole frames. A Write
// of no bytes sends nothing: an empty frame is the end-of-stream marker.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeErr(); err != nil {
		return 0, err
	}
	if need := min(len(p)+maxHeader, maxFrame); len(c.wbuf) < need {
		// Sized to what is written, up to a full frame: a stream of small
		// messages keeps a small buffer.
		c.wbuf = make([]byte, need)
	}
	done := 0
	for done < len(p) {
		chunk := min(len(p)-done, maxChunk)
		n := putHeader(c.wbuf, ws.OpBinary, true, chunk)
		// Copy then mask: the caller's p must stay as it was.
		copy(c.wbuf[n:], p[done:done+chunk])
		var m [4]byte
		copy(m[:], c.wbuf[n-4:n])
		ws.Cipher(c.wbuf[n:n+chunk], m, 0)
		if err := c.writeRaw(c.wbuf[:n+chunk]); err != nil {
			return done, err
		}
		done += chunk
	}
	return done, nil
}

// smallChunk is the payload ReadFrom reads at first: a stream that only
// ever carries small messages (a shell, a request and its answer) needs
// no more.
const smallChunk = 16<<10 - maxHeader

// ReadFrom sends what it reads from src as binary frames, reading straight
// into the frame buffer (header room in front) so a read becomes a frame
// with one copy fewer than Write. io.Copy uses it.
//
// It reads into a 16 KiB buffer of its own, and into a pooled 256 KiB one
// only while reads fill the small one (bulk data): most streams never need
// the large one, and a stream blocked in src.Read between bursts holds 16
// KiB rather than 256, which is what a thousand open streams cost.
func (c *Conn) ReadFrom(src io.Reader) (int64, error) {
	// Buffers of its own: reading src must not hold the write lock, or
	// pongs and Close would wait on src.
	small := make([]byte, maxHeader+smallChunk)
	var big *[]byte
	defer func() {
		if big != nil {
			frameBufs.Put(big)
		}
	}()
	var total int64
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, rerr := src.Read(buf[maxHeader:])
		if n > 0 {
			h := headerSize(n)
			start := maxHeader - h
			putHeader(buf[start:], ws.OpBinary, true, n)
			var m [4]byte
			copy(m[:], buf[maxHeader-4:maxHeader])
			ws.Cipher(buf[maxHeader:maxHeader+n], m, 0)
			c.wmu.Lock()
			werr := c.writeErr()
			if werr == nil {
				werr = c.writeRaw(buf[start : maxHeader+n])
			}
			c.wmu.Unlock()
			if werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
		switch {
		case big == nil && n == smallChunk:
			big = frameBufs.Get().(*[]byte)
		case big != nil && n <= smallChunk:
			frameBufs.Put(big)
			big = nil
		}
	}
}

// writeRaw writes one whole frame in one Write of the TLS conn and, with
// the batching shim, one write syscall. The caller holds wmu.
func (c *Conn) writeRaw(b []byte) error {
	var (
		n   int
		err error
	)
	if c.batch != nil {
		err = c.batch.Batch(func() error {
			var werr error
			n, werr = c.nc.Write(b)
			return werr
		})
	} else {
		n, err = c.nc.Write(b)
	}
	if err != nil && (n > 0 || c.batch != nil || !isTimeout(err)) {
		// Part of a frame may be on the wire (TLS also breaks for good
		// after a failed write), or the connection failed: nothing more
		// may be framed after it. Only a timeout that wrote nothing
		// leaves the stream as it was.
		c.wbroken = true
		if !c.closing.Load() {
			c.setEnd(&CloseError{Code: CodeAbnormal, Err: err})
		}
		c.markDone()
	}
	return err
}

// headerSize is the size of a masked header for a payload of n bytes.
func headerSize(n int) int {
	switch {
	case n < 126:
		return 2 + 4
	case n <= 0xffff:
		return 4 + 4
	default:
		return 10 + 4
	}
}

// putHeader writes a masked header with a fresh random mask at the start of
// b and returns its size.
func putHeader(b []byte, op ws.OpCode, fin bool, n int) int {
	b[0] = byte(op)
	if fin {
		b[0] |= 0x80
	}
	var i int
	switch {
	case n < 126:
		b[1] = byte(n)
		i = 2
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		i = 4
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		i = 10
	}
	b[1] |= 0x80
	// The mask only defeats cache poisoning by proxies (RFC 6455 §10.3);
	// it need not be a secret, so math/rand is enough.
	binary.LittleEndian.PutUint32(b[i:], rand.Uint32())
	return i + 4
}

// CloseWrite ends this side's direction of the stream: with Subprotocol it
// sends the end-of-stream marker once, after which Write fails with
// ErrWriteClosed while Read goes on until the peer's own EOF. Without it
// (the hub selected no subprotocol) it calls Close, since closing is the
// only EOF a peer of the plain protocol understands.
func (c *Conn) CloseWrite() error {
	if !c.halfClose {
		return c.Close()
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent || c.wbroken {
		return net.ErrClosed
	}
	if c.eofSent {
		return nil
	}
	c.eofSent = true
	n := putHeader(c.cbuf[:], ws.OpBinary, true, 0)
	return c.writeRaw(c.cbuf[:n])
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
		binary.BigEndian.PutUint16(body[:], uint16(ws.StatusNormalClosure))
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
			if c.hn >= 0 {
				if c.readHeader() != nil {
					break
				}
				continue
			}
			if c.op.IsControl() {
				c.readControl()
				continue
			}
			if _, err := c.r.Discard(int(c.left)); err != nil {
				c.setReadErr(err)
				break
			}
			c.left, c.hn = 0, 0
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

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the hub's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the connection.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.deadline(func() error { return c.nc.SetDeadline(t) })
}

// SetReadDeadline sets the read deadline of the connection.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.deadline(func() error { return c.nc.SetReadDeadline(t) })
}

// SetWriteDeadline sets the write deadline of the connection.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.deadline(func() error { return c.nc.SetWriteDeadline(t) })
}

func (c *Conn) deadline(set func() error) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.released {
		return net.ErrClosed
	}
	return set()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
