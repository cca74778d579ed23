package main

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-io/tether/service"
)

// readsReset reads c until an error and reports whether it was a reset:
// what a client of a tunnel must see when the tunnel was cut, where EOF
// would say its data ended.
func readsReset(t *testing.T, name string, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%s read ended with %v, want a reset (ECONNRESET), not EOF", name, err)
	}
}

// relayCut waits for a relay's result and checks that it says the stream
// was cut with one of codes.
func relayCut(t *testing.T, name string, errc chan error, codes ...int) {
	t.Helper()
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s relay did not return", name)
	}
	var ce *service.CloseError
	if !errors.As(err, &ce) || !slices.Contains(codes, ce.Code) {
		t.Errorf("%s relay returned %v, want a cut with close %v", name, err, codes)
	}
	if err != nil && !strings.HasPrefix(err.Error(), "the stream was cut: ") {
		t.Errorf("%s relay error %q does not say the stream was cut", name, err)
	}
}

// flowing starts data going from one end of a tunnel to the other and
// waits until some arrived, so that the tunnel is mid-transfer. Only the
// receiving end is then checked for a reset: a socket reports a reset
// once, to whichever call comes first, and a write would take it from
// the read that checks.
func flowing(t *testing.T, from, to net.Conn) {
	t.Helper()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := from.Write(buf); err != nil {
				return
			}
		}
	}()
	if _, err := io.ReadFull(to, make([]byte, 64<<10)); err != nil {
		t.Fatalf("no data through the tunnel: %v", err)
	}
}

// TestRelayLocalResetAbortsStream: a local side reset mid-transfer (RST,
// not FIN) aborts the stream with CodeReset, and the far end resets its
// own local side: a target that crashes is not a clean end for the
// client, nor a client that crashes for the target.
func TestRelayLocalResetAbortsStream(t *testing.T) {
	for _, who := range []string{"target", "user"} {
		t.Run(who+" resets", func(t *testing.T) {
			svc, dev := streamPair(t)
			user, target, fwdErr, agentErr := tunnel(t, svc, dev)
			// The resetting end writes, the far end reads (see flowing).
			resetter, far, farName := target, user, "user"
			resetterRelay, farRelay := agentErr, fwdErr
			if who == "user" {
				resetter, far, farName = user, target, "target"
				resetterRelay, farRelay = fwdErr, agentErr
			}
			flowing(t, resetter, far)
			resetter.SetLinger(0)
			resetter.Close()
			readsReset(t, farName, far)
			relayCut(t, "the "+farName+"'s", farRelay, service.CodeReset)
			select {
			case err := <-resetterRelay:
				if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) || !strings.Contains(err.Error(), "the stream was aborted") {
					t.Errorf("the %s's relay returned %v, want its reset, and the stream aborted", who, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the %s's relay did not return", who)
			}
		})
	}
}

// TestRelayStreamCutResetsLocal: a stream that ends any way but cleanly
// (the hub shutting down, the connection to the hub dropped) resets the
// local side at both ends and is reported as cut.
func TestRelayStreamCutResetsLocal(t *testing.T) {
	for _, how := range []struct {
		name  string
		codes []int
		// open returns both sides of a stream and what cuts it.
		open func(t *testing.T) (svc, dev net.Conn, cut func())
	}{
		{"hub shutting down", []int{service.CodeGoingAway}, func(t *testing.T) (net.Conn, net.Conn, func()) {
			r, url, tlsConf := startRelay(t)
			st, err := r.Open("dev1", "echo", 0)
			if err != nil {
				t.Fatal(err)
			}
			svc := dialSide(t, url(st), st.ServiceToken, tlsConf)
			dev := dialSide(t, url(st), st.DeviceToken, tlsConf)
			return svc, dev, func() { r.Close() }
		}},
		// The proxy drops one connection first: the hub may tell the
		// other side before its own drops ("peer disconnected").
		{"connection dropped", []int{service.CodeAbnormal, service.CodeGoingAway}, func(t *testing.T) (net.Conn, net.Conn, func()) {
			svc, dev, p := droppableStream(t)
			return svc, dev, p.cut
		}},
	} {
		for _, toward := range []string{"user", "target"} {
			t.Run(how.name+", data toward the "+toward, func(t *testing.T) {
				svc, dev, cut := how.open(t)
				user, target, fwdErr, agentErr := tunnel(t, svc, dev)
				from, to := user, target
				if toward == "user" {
					from, to = target, user
				}
				flowing(t, from, to)
				// to goes on reading while the hub ends the stream: its
				// close frame comes after the data in flight.
				cutDone := make(chan struct{})
				go func() { cut(); close(cutDone) }()
				readsReset(t, toward, to)
				<-cutDone
				relayCut(t, "forward", fwdErr, how.codes...)
				relayCut(t, "agent", agentErr, how.codes...)
			})
		}
	}
}

// TestRelayCutAfterHalfClose: the device's side said it was done (its
// marker reached the client as EOF), then the connection to the hub
// dropped while the client was still sending: its data may not have
// arrived, so the client is reset and relay reports the cut.
func TestRelayCutAfterHalfClose(t *testing.T) {
	svc, dev, p := droppableStream(t)
	user, target, fwdErr, agentErr := tunnel(t, svc, dev)
	target.Write([]byte("banner"))
	target.CloseWrite()
	if got, err := io.ReadAll(user); err != nil || string(got) != "banner" {
		t.Fatalf("user read %q, %v; want banner then EOF", got, err)
	}
	flowing(t, user, target)
	go io.Copy(io.Discard, target)
	p.cut()
	relayCut(t, "forward", fwdErr, service.CodeAbnormal, service.CodeGoingAway)
	// The user already read EOF: its writes now meet the reset.
	user.SetWriteDeadline(time.Now().Add(10 * time.Second))
	var werr error
	for werr == nil {
		_, werr = user.Write(make([]byte, 32<<10))
	}
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
		t.Errorf("user write ended with %v, want a reset", werr)
	}
	relayCut(t, "agent", agentErr, service.CodeAbnormal, service.CodeGoingAway)
}

// TestRelayStopAborts: a relay whose ctx ends (the agent or forwarder
// stopping) aborts the stream with CodeGoingAway and resets its local
// side; the far end resets its own.
func TestRelayStopAborts(t *testing.T) {
	svc, dev := streamPair(t)
	u, client := tcpPair(t)
	tc, tgt := tcpPair(t)
	user, target := u.(*net.TCPConn), tgt.(*net.TCPConn)
	ctx, cancel := context.WithCancel(context.Background())
	fwdErr, agentErr := make(chan error, 1), make(chan error, 1)
	go func() { fwdErr <- relay(context.Background(), client, svc, "client → device", "device → client") }()
	go func() { agentErr <- relay(ctx, tc, dev, "target → service", "service → target") }()
	flowing(t, user, target)
	cancel()
	readsReset(t, "target", target)
	relayCut(t, "forward", fwdErr, service.CodeGoingAway)
	select {
	case <-agentErr:
	case <-time.After(10 * time.Second):
		t.Fatal("agent relay did not return after its ctx ended")
	}
}

// droppableStream opens a stream whose two sides reach the hub through a
// cutProxy.
func droppableStream(t *testing.T) (svc, dev net.Conn, p *cutProxy) {
	t.Helper()
	r, url, tlsConf := startRelay(t)
	st, err := r.Open("dev1", "echo", 0)
	if err != nil {
		t.Fatal(err)
	}
	p = startCutProxy(t, url(st))
	svc = dialSide(t, p.url, st.ServiceToken, tlsConf)
	dev = dialSide(t, p.url, st.DeviceToken, tlsConf)
	return svc, dev, p
}

// cutProxy passes TCP connections to a hub until cut drops them all
// without a word, as a hub killed with SIGKILL or a failed network does.
type cutProxy struct {
	url   string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// startCutProxy listens on loopback and forwards to the host of rawURL
// (wss://host:port/path); url is rawURL with the proxy as host.
func startCutProxy(t *testing.T, rawURL string) *cutProxy {
	t.Helper()
	rest := strings.TrimPrefix(rawURL, "wss://")
	target, path, _ := strings.Cut(rest, "/")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{url: "wss://" + ln.Addr().String() + "/" + path, ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer p.wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// cut closes every connection the proxy holds, on both sides.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
