package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wsframe"
)

// maxIdleRequest bounds the header of a request read on a reused conn: it
// must fit the peer's read buffer, which is far more than an upgrade
// request of Tether's own clients needs (the only ones that reuse).
const maxIdleRequest = 4096

// drain reads p after the hub sent it a close frame, until p's own
// close frame: data frames are dropped (the stream is over), and the conn
// is then at a frame boundary, ready for the next request. Any error, or
// the read deadline set before, marks it bad.
func (p *peer) drain() {
	var (
		hbuf [wsframe.MaxHeaderSize]byte
		h    ws.Header
	)
	if p.skip > 0 {
		if _, err := io.CopyN(io.Discard, p.r, p.skip); err != nil {
			p.bad.Store(true)
			return
		}
		p.skip = 0
	}
	for {
		if wsframe.ReadHeader(p.r, &hbuf, &h) != nil || wsframe.Check(&h, true) != nil {
			p.bad.Store(true)
			return
		}
		if _, err := io.CopyN(io.Discard, p.r, h.Length); err != nil {
			p.bad.Store(true)
			return
		}
		if h.OpCode == ws.OpClose {
			p.gotClose.Store(true)
			return
		}
	}
}

// reuseOrClose hands each conn that finished its close handshake cleanly
// and may carry another stream to serveIdle, and closes the others.
func (r *Relay) reuseOrClose(peers []*peer) {
	for _, p := range peers {
		if !p.reuse || !p.sentClose.Load() || !p.gotClose.Load() || p.bad.Load() || p.skip != 0 {
			p.close()
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			p.close()
			continue
		}
		r.idleConns[p] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go r.serveIdle(p)
	}
}

// closeIdle closes every conn waiting for its next request; their
// serveIdle goroutines then end.
func (r *Relay) closeIdle() {
	r.mu.Lock()
	idle := make([]*peer, 0, len(r.idleConns))
	for p := range r.idleConns {
		idle = append(idle, p)
	}
	r.mu.Unlock()
	for _, p := range idle {
		p.hardClose()
	}
}

// serveIdle waits on a reused conn for its next request, up to
// IdleConnTimeout, and serves it as ServeHTTP serves a new conn's: an
// upgrade to the streaming endpoint starts the next stream on the same
// conn, anything else is answered and the conn closed.
func (r *Relay) serveIdle(p *peer) {
	defer r.wg.Done()
	req, err := readIdleRequest(p)
	r.mu.Lock()
	delete(r.idleConns, p)
	closed := r.closed
	r.mu.Unlock()
	if err != nil || closed {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
			r.log.Debug("reused conn: bad request", "remote", p.conn.RemoteAddr(), "err", err)
		}
		p.hardClose()
		return
	}
	p.conn.SetReadDeadline(time.Time{})
	w := &idleWriter{conn: p.conn, br: p.r, header: make(http.Header)}
	if r.idleH != nil {
		r.idleH.ServeHTTP(w, req)
	} else {
		r.ServeHTTP(w, req)
	}
	if !w.hijacked {
		w.finish()
		p.hardClose()
	}
}

// readIdleRequest reads the next request header on p's conn. It must come
// whole within maxIdleRequest bytes and IdleConnTimeout.
func readIdleRequest(p *peer) (*http.Request, error) {
	p.conn.SetReadDeadline(time.Now().Add(IdleConnTimeout))
	for n := 1; ; {
		// Peek(n) waits for n bytes; the header may already be among
		// more than that.
		_, err := p.r.Peek(n)
		b, _ := p.r.Peek(p.r.Buffered())
		if bytes.Contains(b, []byte("\r\n\r\n")) {
			break
		}
		if len(b) >= maxIdleRequest || errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("request header larger than %d bytes", maxIdleRequest)
		}
		if err != nil {
			return nil, err
		}
		n = len(b) + 1
	}
	req, err := http.ReadRequest(p.r)
	if err != nil {
		return nil, err
	}
	req.RemoteAddr = p.conn.RemoteAddr().String()
	return req, nil
}

// idleWriter is the http.ResponseWriter of a request read on a reused
// conn: ServeHTTP either hijacks it (the upgrade) or answers an error,
// which finish sends before the conn is closed.
type idleWriter struct {
	conn     net.Conn
	br       *bufio.Reader
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
}

func (w *idleWriter) Header() http.Header { return w.header }

func (w *idleWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *idleWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

func (w *idleWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return w.conn, bufio.NewReadWriter(w.br, bufio.NewWriter(w.conn)), nil
}

// finish sends the answer ServeHTTP wrote, closing the conn after it.
func (w *idleWriter) finish() {
	w.WriteHeader(http.StatusOK)
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 " + strconv.Itoa(w.status) + " " + http.StatusText(w.status) + "\r\n")
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.header.Set("Connection", "close")
	w.header.Write(&b)
	b.WriteString("\r\n")
	b.Write(w.body.Bytes())
	w.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	w.conn.Write(b.Bytes())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
