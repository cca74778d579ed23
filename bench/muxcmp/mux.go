package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"
	"golang.org/x/net/http2"
)

// session is one multiplexed connection as Tether's ends would hold it.
// Open and Accept are both offered because yamux and smux let either end
// open streams; HTTP/2 lets only its client, so its sessions offer one.
type session interface {
	Open() (io.ReadWriteCloser, error)
	Accept() (io.ReadWriteCloser, error)
	Close() error
}

// candidate builds sessions of one multiplexer. dialer says which end made
// the TLS connection (yamux and smux number streams by it); opener says
// which end opens streams (HTTP/2's client role, which is the hub's on the
// device's connection although the device dialled it).
type candidate struct {
	name string
	new  func(c net.Conn, dialer, opener bool, window int) (session, error)
}

var candidates = map[string]candidate{
	"yamux": {"yamux", newYamux},
	"smux":  {"smux", newSmux},
	"h2":    {"h2", newH2},
}

type yamuxSession struct{ s *yamux.Session }

func newYamux(c net.Conn, dialer, _ bool, window int) (session, error) {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.EnableKeepAlive = false
	cfg.AcceptBacklog = 4096
	// The window grows to MaxStreamWindowSize with the first update.
	cfg.MaxStreamWindowSize = uint32(window)
	var s *yamux.Session
	var err error
	if dialer {
		s, err = yamux.Client(c, cfg)
	} else {
		s, err = yamux.Server(c, cfg)
	}
	return yamuxSession{s}, err
}

func (y yamuxSession) Open() (io.ReadWriteCloser, error)   { return y.s.OpenStream() }
func (y yamuxSession) Accept() (io.ReadWriteCloser, error) { return y.s.AcceptStream() }
func (y yamuxSession) Close() error                        { return y.s.Close() }

type smuxSession struct{ s *smux.Session }

func newSmux(c net.Conn, dialer, _ bool, window int) (session, error) {
	cfg := smux.DefaultConfig()
	// Version 2 is the one with a window per stream; version 1 (the
	// default) has only the session's shared buffer.
	cfg.Version = 2
	cfg.KeepAliveDisabled = true
	cfg.MaxStreamBuffer = window
	// The session-wide budget is what every unread stream shares: at its
	// default (4 MiB) 16 stalled streams of 256 KiB stop the session's
	// reader and so every stream. It is raised so that the window per
	// stream is the only bound, as Tether would have to.
	cfg.MaxReceiveBuffer = 1 << 30
	if err := smux.VerifyConfig(cfg); err != nil {
		return nil, err
	}
	var s *smux.Session
	var err error
	if dialer {
		s, err = smux.Client(c, cfg)
	} else {
		s, err = smux.Server(c, cfg)
	}
	return smuxSession{s}, err
}

func (m smuxSession) Open() (io.ReadWriteCloser, error)   { return m.s.OpenStream() }
func (m smuxSession) Accept() (io.ReadWriteCloser, error) { return m.s.AcceptStream() }
func (m smuxSession) Close() error                        { return m.s.Close() }

// plainConn hides *tls.Conn's ConnectionState from http2.Server, which
// would otherwise insist on ALPN h2 for a connection whose TLS roles are
// the reverse of its HTTP roles (the device dials, then serves).
type plainConn struct{ net.Conn }

// h2Session is one end of an HTTP/2 connection: a stream is a POST whose
// request body carries one direction and whose response body the other.
type h2Session struct {
	conn    net.Conn
	cc      *http2.ClientConn
	accepts chan *h2Accepted
	done    chan struct{}
	once    sync.Once
}

func newH2(c net.Conn, _, opener bool, window int) (session, error) {
	s := &h2Session{conn: c, done: make(chan struct{})}
	if opener {
		t1 := &http.Transport{HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     window,
			MaxReceiveBufferPerConnection: 1 << 30,
		}}
		t2, err := http2.ConfigureTransports(t1)
		if err != nil {
			return nil, err
		}
		cc, err := t2.NewClientConn(c)
		if err != nil {
			return nil, err
		}
		s.cc = cc
		return s, nil
	}
	s.accepts = make(chan *h2Accepted, 4096)
	srv := &http2.Server{
		MaxConcurrentStreams:         100000,
		MaxUploadBufferPerStream:     int32(window),
		MaxUploadBufferPerConnection: 1 << 30,
	}
	go func() {
		srv.ServeConn(plainConn{c}, &http2.ServeConnOpts{Handler: http.HandlerFunc(s.serve)})
		s.Close()
	}()
	return s, nil
}

func (s *h2Session) serve(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	a := &h2Accepted{body: r.Body, w: w, rc: rc, done: make(chan struct{})}
	select {
	case s.accepts <- a:
	case <-s.done:
		return
	}
	select {
	case <-a.done:
	case <-r.Context().Done():
	case <-s.done:
	}
}

func (s *h2Session) Open() (io.ReadWriteCloser, error) {
	if s.cc == nil {
		return nil, errors.New("h2: only the client end opens streams")
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://hub/stream", pr)
	if err != nil {
		cancel()
		return nil, err
	}
	req.ContentLength = -1
	o := &h2Opened{pw: pw, cancel: cancel, ready: make(chan struct{})}
	// The request goes out at once; its bytes may follow before the
	// answer's headers, as a one-request opening would send them.
	go func() {
		resp, err := s.cc.RoundTrip(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			err = fmt.Errorf("h2: status %d", resp.StatusCode)
		}
		o.resp, o.err = resp, err
		close(o.ready)
	}()
	return o, nil
}

func (s *h2Session) Accept() (io.ReadWriteCloser, error) {
	if s.accepts == nil {
		return nil, errors.New("h2: only the server end accepts streams")
	}
	select {
	case a := <-s.accepts:
		return a, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

func (s *h2Session) Close() error {
	s.once.Do(func() { close(s.done) })
	return s.conn.Close()
}

type h2Opened struct {
	pw     *io.PipeWriter
	cancel context.CancelFunc
	ready  chan struct{}
	resp   *http.Response
	err    error
	once   sync.Once
}

func (o *h2Opened) Write(p []byte) (int, error) { return o.pw.Write(p) }

func (o *h2Opened) Read(p []byte) (int, error) {
	<-o.ready
	if o.err != nil {
		return 0, o.err
	}
	return o.resp.Body.Read(p)
}

func (o *h2Opened) Close() error {
	o.once.Do(func() {
		o.pw.Close()
		o.cancel()
		go func() {
			<-o.ready
			if o.resp != nil {
				o.resp.Body.Close()
			}
		}()
	})
	return nil
}

type h2Accepted struct {
	body io.ReadCloser
	w    http.ResponseWriter
	rc   *http.ResponseController
	done chan struct{}
	once sync.Once
}

func (a *h2Accepted) Read(p []byte) (int, error) { return a.body.Read(p) }

func (a *h2Accepted) Write(p []byte) (n int, err error) {
	select {
	case <-a.done:
		return 0, net.ErrClosed
	default:
	}
	// A Write that loses the race with Close meets a handler that has
	// returned, which http2 answers with a panic: it is a closed stream.
	defer func() {
		if recover() != nil {
			n, err = 0, net.ErrClosed
		}
	}()
	n, err = a.w.Write(p)
	if err == nil {
		err = a.rc.Flush()
	}
	return n, err
}

func (a *h2Accepted) Close() error {
	a.once.Do(func() {
		close(a.done)
		a.body.Close()
	})
	return nil
}
