package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tether-io/tether/internal/certerr"
	"github.com/tether-io/tether/internal/cliflag"
	"github.com/tether-io/tether/service"
)

const forwardUsage = `usage: tether forward DEVICE STREAM --listen ADDR

Accepts TCP connections on ADDR (host:port, or a bare port for 127.0.0.1)
and relays each one through a new stream named STREAM to DEVICE. A hub or
device that goes away and comes back needs no restart: each connection
asks for a new stream. With a Tether hub all the streams share one
connection to the hub, and a connection's first bytes leave with its
stream's request; --no-sessions (or TETHER_SESSIONS=0) gives each stream
a connection of its own.
`

// deviceAndStream reads the DEVICE STREAM arguments of forward and pipe.
func deviceAndStream(pos []string, usage string) (device, stream string, err error) {
	if len(pos) != 2 {
		return "", "", errors.New("a device and a stream are needed: " + usage)
	}
	device, stream = pos[0], pos[1]
	if strings.ContainsAny(stream, "/?#+") {
		return "", "", fmt.Errorf("bad stream name %q: it may not hold / ? # +", stream)
	}
	return device, stream, nil
}

func cmdForward(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("forward", forwardUsage)
	listen := fs.String("listen", "", "`ADDR` to accept connections on: HOST:PORT, or a port for 127.0.0.1")
	logFormat := fs.String("log-format", "plain", "log format on stderr: plain (a line per event), text or json")
	logLevel := fs.String("log-level", "info", "debug (a line per connection), info, warn or error")
	cliflag.Env(fs, "log-format", "TETHER_LOG_FORMAT") // forwardLogger reads them
	cliflag.Env(fs, "log-level", "TETHER_LOG_LEVEL")
	noSessions := sessionsFlag(fs)
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if g.noSessions, err = sessionsOff(*noSessions); err != nil {
		return err
	}
	device, stream, err := deviceAndStream(pos, "tether forward DEVICE STREAM --listen ADDR")
	if err != nil {
		return err
	}
	if *listen == "" {
		return errors.New("forward needs --listen ADDR (host:port, or a port for 127.0.0.1)")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	log, plain, err := forwardLogger(g.Stderr, *logFormat, *logLevel, set, os.Getenv)
	if err != nil {
		return err
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()

	addr := *listen
	if !strings.Contains(addr, ":") {
		// A bare port stays on loopback: exposing a device to the network
		// should take an explicit host.
		addr = net.JoinHostPort("127.0.0.1", addr)
	}
	lc := net.ListenConfig{KeepAlive: keepAliveFor(addr)}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return fmt.Errorf("cannot listen on %s: %v", addr, err)
	}
	defer ln.Close()
	if !onLoopback(ln.Addr()) {
		log.Warn(fmt.Sprintf("listening on %s, which is not a loopback address: anyone who can reach this port reaches %s's %s stream, with no key of their own; --listen 127.0.0.1:PORT keeps it to this machine", ln.Addr(), device, stream))
	}

	check := func(ctx context.Context) error { return checkDevice(ctx, log, c, device) }
	explain := func(err error) error { return explainHubError(err, c, device) }
	if err := waitForHub(ctx, log, check, explain); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return explain(err)
	}
	if plain {
		// The line people and scripts wait for, as it always was.
		fmt.Fprintf(g.Stderr, "forwarding %s → %s/%s\n", ln.Addr(), device, stream)
	} else {
		log.Info("forwarding", "listen", ln.Addr().String(), "device", device, "stream", stream)
	}
	f := &forwarder{
		client: c,
		device: device,
		stream: stream,
		log:    log,
		conns:  make(map[net.Conn]struct{}),
	}
	f.serve(ctx, ln)
	return nil
}

// sessionsOff is whether a service command (forward, pipe, shell) keeps
// each stream on a connection of its own: --no-sessions, or
// TETHER_SESSIONS read as the agent reads it (0, false or off), so that
// one setting means the same to every command and a typo is an error.
func sessionsOff(flag bool) (bool, error) {
	on, err := sessionsOn(flag, os.Getenv("TETHER_SESSIONS"))
	return !on, err
}

// sessionsFlag registers forward's and pipe's --no-sessions. It is read
// with TETHER_SESSIONS=0, which turns sessions off too (cliflag.Env would
// take its 0 for --no-sessions=false).
func sessionsFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("no-sessions", false, "give each stream a connection of its own to the hub, "+
		"not one session for all (so does TETHER_SESSIONS=0)")
}

// checkDevice makes a wrong device, key or CA fail at start rather than
// at the first connection. Its error is the SDK's, for waitForHub to tell
// an unreachable hub from a refusal.
func checkDevice(ctx context.Context, log *slog.Logger, c *service.Client, device string) error {
	_, err := c.GetDevice(ctx, device)
	if err == nil {
		return nil
	}
	if errors.Is(err, service.ErrUnauthorized) {
		// A policy with ServiceConnect alone (Azure's "service") may open
		// streams yet not read the registry. Any valid token may read the
		// endpoints, which tells a missing right from a bad key.
		if _, err2 := c.StreamingEndpoints(ctx); err2 == nil {
			log.Info(fmt.Sprintf("the policy cannot read the registry; device %q is checked at each connection", device))
			return nil
		}
	}
	return err
}

// forwarder relays each accepted connection through its own stream.
type forwarder struct {
	client         *service.Client
	device, stream string

	log *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // client connections, to reset at the end
	closed bool
	wg     sync.WaitGroup
}

// track registers c to be closed when the forwarder stops; false means it
// has already stopped and c must be closed now.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

func (f *forwarder) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		// A reset: a client must not take a forwarder that stopped
		// mid-transfer for the end of its data.
		resetConn(c)
	}
}

// serve accepts until ctx is done, then closes every connection and waits
// for their goroutines.
func (f *forwarder) serve(ctx context.Context, ln net.Listener) {
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		f.closeAll()
	})
	defer stop()
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			// Out of file descriptors and the like pass: back off rather
			// than spin, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			f.log.Warn("accepting", "retry_in", delay, "err", err)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			continue
		}
		delay = 0
		if !f.track(conn) {
			conn.Close()
			break
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.handle(ctx, conn)
		}()
	}
	f.closeAll()
	f.wg.Wait()
}

func (f *forwarder) handle(ctx context.Context, client net.Conn) {
	defer f.untrack(client)
	defer client.Close()
	from := client.RemoteAddr().String()
	start := time.Now()
	// The client's first bytes follow the stream's request at once, on a
	// session, rather than a round trip later.
	st, err := f.client.StartStream(ctx, f.device, f.stream)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("connection", "from", from, "err", f.explain(err))
		}
		return
	}
	defer st.Close()
	var opened chan time.Duration
	if f.log.Enabled(ctx, slog.LevelDebug) {
		opened = make(chan time.Duration, 1)
		go func() {
			defer close(opened)
			if st.Accepted(ctx) == nil {
				opened <- time.Since(start)
			}
		}()
	}
	// relay watches ctx: a stopping forwarder aborts the stream.
	err = relay(ctx, &refusable{Conn: client, st: st}, st, "client → device", "device → client")
	switch {
	case ctx.Err() != nil:
		return
	case refusal(st) != nil:
		f.log.Warn("connection", "from", from, "err", f.explain(refusal(st)))
		return
	case err != nil:
		f.log.Warn("connection", "from", from, "err", err)
		return
	}
	// One line per connection that went well, for whoever debugs a slow
	// or flaky tunnel: how long the stream took to open, and to end.
	if opened != nil {
		f.log.Debug("connection", "from", from, "open", (<-opened).Round(time.Millisecond), "duration", time.Since(start).Round(time.Millisecond))
	}
}

// refusal is the error of a stream that never opened: the device rejected
// it, the hub refused it or did not answer. It is nil for a stream that
// opened, however it ended, and while the answer is to come.
func refusal(st *service.Stream) error {
	err := st.Err()
	var ce *service.CloseError
	if err == nil || errors.As(err, &ce) {
		return nil
	}
	return err
}

// refusable is the forwarder's client connection as relay sees it. Relay
// resets the connection of a stream that failed; one whose stream never
// opened is closed instead, as it was when the stream was opened before
// relaying, so that a client sees its connection end rather than reset.
type refusable struct {
	net.Conn
	st *service.Stream
}

func (c *refusable) SetLinger(sec int) error {
	if refusal(c.st) != nil {
		return nil
	}
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

// CloseWrite half-closes the client's connection, as relay passes on the
// stream's EOF.
func (c *refusable) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

func (f *forwarder) explain(err error) error {
	if errors.Is(err, service.ErrRejected) {
		return explainRejection(err, f.device, f.stream)
	}
	var ae *service.APIError
	if errors.As(err, &ae) || errors.Is(err, service.ErrTimeout) {
		return explainHubError(err, f.client, f.device)
	}
	if _, ok := certerr.Find(err); ok {
		// The SDK's line says the fix in the SDK's terms.
		return explainCert(err, f.client.HostName())
	}
	// Failures to reach the hub keep the SDK's own line, which names the
	// address.
	return err
}

// onLoopbackHost reports whether hostport names a loopback address: an IP
// of one, or localhost.
func onLoopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// keepAliveFor is the KeepAlive of the forwarder's listener and of the
// agent's dial of its target, on hostport: none (-1) on loopback, where
// the kernel itself ends a connection whose other end is gone, which
// spares four socket options on every connection; Go's default (0)
// elsewhere, where a peer can vanish without a word.
func keepAliveFor(hostport string) time.Duration {
	if onLoopbackHost(hostport) {
		return -1
	}
	return 0
}

// onLoopback reports whether addr is a loopback address, which only this
// machine reaches: a wildcard (":2222") or a network address exposes the
// device to whoever reaches the port, tether's checks of the policy
// notwithstanding, since the forwarder opens streams with its own key.
func onLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
