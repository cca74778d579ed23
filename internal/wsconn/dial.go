package wsconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/batchconn"
	"github.com/tether-io/tether/wire"
)

const (
	// maxErrorBody bounds what is read of a rejected handshake's body.
	maxErrorBody = 64 << 10
	// errorBodyTimeout bounds reading that body when ctx has no deadline, so
	// a server that never finishes its answer cannot hang Dial.
	errorBodyTimeout = 5 * time.Second
)

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
	c.protocol = hs.Protocol
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

// sessionWriteTimeout bounds each write to a session's connection: an
// end whose hub took nothing for that long has lost its session (the
// hub's own bound on its writes to an end is the same).
const sessionWriteTimeout = 30 * time.Second

// ErrNoSession is returned by DialSession when the hub has no sessions: it
// answered the upgrade with 404, 400, 405 or 426, or upgraded without
// selecting wire.SubprotocolMux. The caller goes on with streams of their
// own WebSocket.
var ErrNoSession = errors.New("wsconn: the hub does not offer sessions")

// DialSession opens a session WebSocket (wire.SubprotocolMux) to url,
// sending header (the caller's credentials). Its Conn carries the session's
// bytes in binary frames; it has no end-of-stream marker. Any answer but
// 101 other than those of ErrNoSession is a *HandshakeError.
func DialSession(ctx context.Context, url string, header http.Header, tlsConf *tls.Config) (*Conn, error) {
	hh, err := requestHeader(header)
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx, url, hh, tlsConf, []string{wire.SubprotocolMux})
	var herr *HandshakeError
	if errors.As(err, &herr) {
		switch herr.StatusCode {
		case http.StatusNotFound, http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUpgradeRequired:
			return nil, fmt.Errorf("%w (%w)", ErrNoSession, err)
		}
	}
	if err != nil {
		return nil, err
	}
	if c.protocol != wire.SubprotocolMux {
		c.Abort(1002, "session subprotocol not selected")
		return nil, ErrNoSession
	}
	c.writeTimeout = sessionWriteTimeout
	return c, nil
}

// OnSession returns a stream of a session (a yamux stream, once its
// headers were exchanged; wire.SubprotocolMux) as a *Conn: the same frames
// as a tether-stream.v1 WebSocket after its upgrade, end-of-stream marker
// included. Closing the Conn closes nc.
func OnSession(nc net.Conn) *Conn {
	c := newConn(nc, nil, nc, nil)
	c.protocol = Subprotocol
	c.halfClose = true
	c.zeroMask = true
	return c
}
