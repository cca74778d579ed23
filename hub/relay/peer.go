package relay

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/batchconn"
	"github.com/tether-io/tether/internal/wsframe"
)

// peer is one side's hijacked conn.
type peer struct {
	side     side
	tether   bool // selected Subprotocol: knows the end-of-stream marker
	conn     net.Conn
	batch    *batchconn.Conn // beneath conn's TLS, when the listener put one there
	r        *bufio.Reader
	wtimeout time.Duration
	// window is conn when it is a session stream, whose writes wait for
	// its peer's flow-control window (internal/yamux): the relay reads
	// no more than that window for it (room).
	window windowed

	// wmu serialises writes: data frames from one copy goroutine, pongs
	// and close frames from the other.
	wmu  sync.Mutex
	cbuf [10 + ws.MaxControlFramePayloadSize]byte
	shut atomic.Bool // set by closing: writes past it fail at once

	// Reuse (tether-stream.v2): the conn carries another stream once this
	// one ended with a close frame each way and nothing was left half read.
	reuse     bool
	sentClose atomic.Bool // the hub's close frame went out whole
	gotClose  atomic.Bool // the side's close frame was read
	bad       atomic.Bool // read state lost (error, protocol error, unread payload)
	skip      int64       // payload left unread when a write to the other side failed
}

func newPeer(s side, conn net.Conn, hijacked *bufio.Reader, wtimeout time.Duration) *peer {
	var src io.Reader = conn
	if hijacked != nil && hijacked.Buffered() > 0 {
		// Bytes net/http read ahead belong to the stream; after them, read
		// the conn itself rather than through net/http's reader.
		src = io.MultiReader(io.LimitReader(hijacked, int64(hijacked.Buffered())), conn)
	}
	// Buffered so a frame header costs no syscall of its own on plain TCP;
	// payload reads larger than the buffer bypass it.
	window, _ := conn.(windowed)
	return &peer{side: s, conn: conn, batch: batchconn.Find(conn), r: bufio.NewReaderSize(src, 4096), wtimeout: wtimeout, window: window}
}

// windowed is a conn whose writes wait until its peer takes the bytes:
// SendWindow waits, under the write deadline, until a write can send
// some, and says how many.
type windowed interface {
	SendWindow() (int, error)
}

// room waits until p takes bytes without waiting for its peer and returns
// how many, at most max: a session stream's send window. Any other conn
// takes max (its socket buffers are the kernel's). It waits as write does,
// under a fresh write deadline, and the caller holds no buffer meanwhile:
// a peer that stopped reading leaves nothing read and held by the relay.
func (p *peer) room(max int) (int, error) {
	if p.window == nil {
		return max, nil
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.conn.SetWriteDeadline(time.Now().Add(p.wtimeout))
	// As in write: after the deadline, so that closing's short deadline
	// or its shut flag is seen.
	if p.shut.Load() {
		return 0, net.ErrClosed
	}
	n, err := p.window.SendWindow()
	if err != nil {
		return 0, err
	}
	return min(n, max), nil
}

// write sends b in one Write under a fresh write deadline. The caller
// holds wmu.
func (p *peer) write(b []byte) error {
	p.conn.SetWriteDeadline(time.Now().Add(p.wtimeout))
	// Checked after setting the deadline: closing sets shut before its
	// short deadline, so either this sees shut or the short deadline
	// replaces the long one.
	if p.shut.Load() {
		return net.ErrClosed
	}
	if p.batch != nil {
		return p.batch.Batch(func() error {
			_, err := p.conn.Write(b)
			return err
		})
	}
	_, err := p.conn.Write(b)
	return err
}

// writeEOF sends the end-of-stream marker: an empty binary frame with FIN.
func (p *peer) writeEOF() error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.write(wsframe.AppendFrame(p.cbuf[:0], ws.OpBinary, nil))
}

// writeControl sends one unmasked control frame.
func (p *peer) writeControl(op ws.OpCode, payload []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.write(wsframe.AppendFrame(p.cbuf[:0], op, payload))
}

// closing shortens the write deadline so that a write blocked on a peer
// that stopped reading gives up soon, and refuses writes after it but for
// the one close frame.
func (p *peer) closing(d time.Duration) {
	p.shut.Store(true)
	p.conn.SetWriteDeadline(time.Now().Add(d))
}

// writeClose sends a close frame after closing; errors are of no use, the
// conn is closed next either way.
func (p *peer) writeClose(payload []byte) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	// Again under wmu: a writer that gave up on seeing shut may have set
	// its long deadline after closing set the short one.
	p.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	if _, err := p.conn.Write(wsframe.AppendFrame(p.cbuf[:0], ws.OpClose, payload)); err == nil {
		p.sentClose.Store(true)
	}
}

// close closes p's conn once its stream is over. After a close handshake
// that completed, the TLS layer says goodbye too (close_notify): the peer
// read everything up to the hub's close frame, so the alert cannot stall,
// and a client's TLS library (the Azure C SDK's among them) sees an orderly
// end instead of a dropped connection. Otherwise the conn is dropped.
func (p *peer) close() {
	if p.sentClose.Load() && p.gotClose.Load() && !p.bad.Load() && p.skip == 0 {
		p.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
		p.conn.Close()
		return
	}
	p.hardClose()
}

// hardClose closes the TCP conn under any TLS: the close frame already
// ended the stream, and tls.Conn.Close may block for seconds sending
// close_notify to a peer that does not read.
func (p *peer) hardClose() {
	if tc, ok := p.conn.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	p.conn.Close()
}
