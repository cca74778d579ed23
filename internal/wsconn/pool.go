package wsconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/batchconn"
)

const (
	// PoolIdleTimeout is how long a Pool keeps a connection no stream
	// uses: well under the hub's 90 s, so that the hub is not closing a
	// connection just as the pool sends a request on it.
	PoolIdleTimeout = 30 * time.Second
	// PoolMaxIdle caps the idle connections a Pool keeps per hub: enough
	// for bursts of streams opened at once, few enough that an idle
	// client costs the hub little.
	PoolMaxIdle = 64
)

// Pool dials streams like Dial, but offers SubprotocolReuse first and
// keeps each connection whose stream ended cleanly for the next stream to
// the same host: a TLS handshake costs milliseconds of CPU on both ends, a
// request on an open connection a few microseconds. Against a hub that
// does not select SubprotocolReuse (Azure's, an older Tether) it is Dial.
// The zero value is not usable; NewPool makes one. It is safe for
// concurrent use.
type Pool struct {
	mu     sync.Mutex
	idle   map[string][]*pooled // newest last
	closed bool
}

// pooled is an idle connection at an HTTP/1.1 request boundary.
type pooled struct {
	nc, raw net.Conn
	batch   *batchconn.Conn
	since   time.Time
}

// NewPool returns an empty Pool.
func NewPool() *Pool {
	return &Pool{idle: make(map[string][]*pooled)}
}

// Dial opens a stream as Dial does, on an idle connection to the same
// host when there is one. A connection the hub closed while idle costs a
// retry on the next one, then a new connection: its request never reached
// the hub, so the token is still unspent.
func (p *Pool) Dial(ctx context.Context, rawURL, token string, tlsConf *tls.Config) (net.Conn, error) {
	if !validToken(token) {
		return nil, ErrBadToken
	}
	return p.dial(ctx, rawURL, bearer(token), tlsConf)
}

// DialHeader is Dial for an upgrade request that carries header rather
// than a streaming token: the service's one-request stream opening
// (docs/protocol.md), whose request goes to the hub's REST path with the
// service's own credentials. An answer other than 101 is a
// *HandshakeError, with the answer's header.
func (p *Pool) DialHeader(ctx context.Context, rawURL string, header http.Header, tlsConf *tls.Config) (net.Conn, error) {
	hh, err := requestHeader(header)
	if err != nil {
		return nil, err
	}
	return p.dial(ctx, rawURL, hh, tlsConf)
}

func (p *Pool) dial(ctx context.Context, rawURL string, header ws.HandshakeHeader, tlsConf *tls.Config) (net.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("wsconn: dial %s: %w", rawURL, err)
	}
	key := u.Scheme + "://" + u.Host
	for {
		pc := p.take(key)
		if pc == nil {
			break
		}
		c, err := upgrade(ctx, pc, u, header)
		if err == nil {
			c.pool, c.key = p, key
			return c, nil
		}
		var herr *HandshakeError
		if errors.As(err, &herr) || ctx.Err() != nil {
			return nil, err
		}
	}
	c, err := dial(ctx, rawURL, header, tlsConf, []string{SubprotocolReuse, Subprotocol})
	if err != nil {
		return nil, err
	}
	c.pool, c.key = p, key
	return c, nil
}

// upgrade sends the upgrade request on an idle connection. Any error but
// a HandshakeError means the connection was dead; it is closed either way
// when the upgrade fails.
func upgrade(ctx context.Context, pc *pooled, u *url.URL, header ws.HandshakeHeader) (*Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		pc.nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { pc.nc.SetDeadline(time.Unix(1, 0)) })
	var herr *HandshakeError
	d := ws.Dialer{
		Header:    header,
		Protocols: []string{SubprotocolReuse, Subprotocol},
		OnStatusError: func(status int, _ []byte, resp io.Reader) {
			herr = readHandshakeError(ctx, pc.raw, status, resp)
		},
	}
	br, hs, err := d.Upgrade(pc.nc, u)
	if !stop() || err != nil {
		pc.raw.Close()
		if herr != nil {
			return nil, herr
		}
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("wsconn: dial %s on a reused connection: %w", u.Redacted(), err)
	}
	pc.nc.SetDeadline(time.Time{})
	c := newConn(pc.nc, br, pc.raw, pc.batch)
	c.halfClose = hs.Protocol == Subprotocol || hs.Protocol == SubprotocolReuse
	c.reuse = hs.Protocol == SubprotocolReuse
	return c, nil
}

// take returns the newest idle connection to key that is young enough, or
// nil; it closes those too old.
func (p *Pool) take(key string) *pooled {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(key)
	list := p.idle[key]
	if len(list) == 0 {
		return nil
	}
	pc := list[len(list)-1]
	list[len(list)-1] = nil
	p.idle[key] = list[:len(list)-1]
	return pc
}

// put keeps pc for the next stream to key, closing the oldest past
// PoolMaxIdle, or closes pc once the pool is closed.
func (p *Pool) put(key string, pc *pooled) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		pc.raw.Close()
		return
	}
	p.expireLocked(key)
	list := append(p.idle[key], pc)
	if len(list) > PoolMaxIdle {
		list[0].raw.Close()
		list = append(list[:0], list[1:]...)
	}
	p.idle[key] = list
}

// expireLocked closes the connections to key idle longer than
// PoolIdleTimeout; they are the oldest, at the front.
func (p *Pool) expireLocked(key string) {
	list := p.idle[key]
	cut := time.Now().Add(-PoolIdleTimeout)
	n := 0
	for n < len(list) && list[n].since.Before(cut) {
		list[n].raw.Close()
		n++
	}
	if n > 0 {
		p.idle[key] = append(list[:0], list[n:]...)
	}
}

// Idle returns the number of idle connections the pool holds.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}

// CloseIdle closes the idle connections; the pool stays usable.
func (p *Pool) CloseIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeIdleLocked()
}

// Close closes the idle connections, and those of streams still open once
// they end. Dial still works after Close, without reuse.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.closeIdleLocked()
	return nil
}

func (p *Pool) closeIdleLocked() {
	for key, list := range p.idle {
		for _, pc := range list {
			pc.raw.Close()
		}
		delete(p.idle, key)
	}
}
