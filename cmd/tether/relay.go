package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tether-io/tether/service"
)

// streamEndWait bounds how long relay waits, once both directions ended
// cleanly, for the stream's close frames: the hub sends them as soon as
// both end-of-stream markers passed, and only then is the end known to
// be clean rather than cut just after.
const streamEndWait = 5 * time.Second

// relay copies both ways between a local connection (the forwarder's
// client, the agent's target, pipe's stdin and stdout) and a stream, and
// returns when both directions have ended; toStream and fromStream name
// the directions in errors.
//
// EOF is passed on one direction at a time, so a client that half-closes
// (nc -N, ssh host 'cat > f', an HTTP/1.0 request) still gets its answer:
// local EOF half-closes the stream (the stream's CloseWrite, which closes
// it whole when the peer cannot half-close) while the answer goes on
// flowing to local; the stream's EOF half-closes local while local's bytes
// go on flowing to the stream. Once the stream is over both ways (its Done)
// relay stops reading local, so that nothing waits on a peer that is gone.
// A stream without Done (no half-close) is over at its first EOF.
//
// Only a clean end becomes EOF, and a FIN, on the local side: the peer's
// end-of-stream marker, or its close 1000. A stream that was cut (the hub
// killed or shutting down, the peer gone, a limit) resets local (RST)
// instead, so that a truncated transfer cannot pass for a complete one,
// and relay returns a *cutError. The other way round, a local connection
// that fails (reset by its peer, any error but EOF) aborts the stream
// with service.CodeReset, so that the far end resets its own local side.
// When ctx ends (the command is stopping), the stream is aborted with
// service.CodeGoingAway and local is reset.
func relay(ctx context.Context, local, stream net.Conn, toStream, fromStream string) error {
	r := &relayer{local: local, stream: stream}
	stop := context.AfterFunc(ctx, func() {
		r.fail(nil, func() { abortStream(stream, service.CodeGoingAway, "tether is shutting down") })
	})
	defer stop()

	var up, down int64
	var wg sync.WaitGroup
	wg.Add(2)
	// Closed when the local → stream direction ended: the watch below has
	// nothing left to stop then.
	upDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(upDone)
		lr := &localReader{c: local}
		var err error
		up, err = io.Copy(stream, lr)
		switch {
		case err == nil:
			closeWrite(stream)
		case lr.err != nil && !r.ours(lr.err):
			r.localFailed(toStream, lr.err)
		}
		// A failed write to the stream is the stream's end, which the
		// other direction or the check below reads.
	}()
	go func() {
		defer wg.Done()
		lw := &localWriter{c: local}
		var err error
		down, err = io.Copy(lw, stream)
		switch {
		case r.isFailed():
			// Handled: local was reset, which a FIN must not follow.
		case lw.err != nil && !r.ours(lw.err):
			r.localFailed(fromStream, lw.err)
		case err != nil && !r.ours(err):
			r.cut(err)
		default:
			// EOF, or a stream relay closed itself (local EOF toward a
			// peer that cannot half-close).
			closeWrite(local)
			if d, ok := stream.(interface{ Done() <-chan struct{} }); ok && err == nil {
				// EOF may be the peer's half-close: local's bytes still go
				// through until the stream ends whole.
				select {
				case <-d.Done():
				case <-upDone:
				}
			}
		}
		// Nothing local sends now could reach the other end.
		local.SetReadDeadline(time.Now())
	}()
	wg.Wait()
	r.checkEnd()

	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.cutBy != nil:
		return &cutError{err: r.cutBy, up: up, down: down, toStream: toStream, fromStream: fromStream}
	case r.localErr != nil:
		return r.localErr
	}
	return nil
}

// relayer is the state the two directions of a relay share: whether the
// tunnel failed, and why. Only the first failure acts.
type relayer struct {
	local, stream net.Conn

	mu       sync.Mutex
	failed   bool
	cutBy    error // the stream's end, when it was cut
	localErr error // the local side's failure
}

// fail marks the relay failed and, the first time, runs end and resets
// the local side. err is the stream's cut, or nil when end aborts it.
func (r *relayer) fail(err error, end func()) {
	r.mu.Lock()
	if r.failed {
		r.mu.Unlock()
		return
	}
	r.failed = true
	r.cutBy = err
	r.mu.Unlock()
	if end != nil {
		end()
	}
	resetConn(r.local)
}

// cut is the stream ending any way but cleanly: local is reset.
func (r *relayer) cut(err error) { r.fail(err, nil) }

// localFailed is local failing (reset by its peer, a read or write
// error): the stream is aborted with CodeReset, for the far end to reset
// its local side in turn.
func (r *relayer) localFailed(dir string, err error) {
	r.mu.Lock()
	if !r.failed {
		r.localErr = fmt.Errorf("%s: %w (the stream was aborted with close %d)", dir, err, service.CodeReset)
	}
	r.mu.Unlock()
	r.fail(nil, func() { abortStream(r.stream, service.CodeReset, dir+": "+localCause(err)) })
}

// ours reports whether err comes from relay's own doing: a failure
// already handled (which closed or reset a side), the read deadline that
// stops local once the stream is over, a connection closed on shutdown.
func (r *relayer) ours(err error) bool {
	return r.isFailed() || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

func (r *relayer) isFailed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// checkEnd looks, once both directions ended without a failure, at how
// the stream ended: a cut after the peer's end-of-stream marker (the hub
// killed before its close frames) still resets local. It waits for the
// close frames that follow both markers, up to streamEndWait.
func (r *relayer) checkEnd() {
	s, ok := r.stream.(interface {
		Done() <-chan struct{}
		Err() error
	})
	if !ok {
		return
	}
	t := time.NewTimer(streamEndWait)
	defer t.Stop()
	select {
	case <-s.Done():
	case <-t.C:
	}
	if err := s.Err(); err != nil && !r.isFailed() {
		r.cut(err)
	}
}

// localCause is err short enough for a close frame's reason: the
// system's words ("connection reset by peer") without the addresses.
func localCause(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	return err.Error()
}

// cutError is relay's error for a stream that was cut: what cut it and
// how far each direction got.
type cutError struct {
	err                  error
	up, down             int64
	toStream, fromStream string
}

func (e *cutError) Error() string {
	return fmt.Sprintf("the stream was cut: %s; %s went %s, %s %s", strings.TrimPrefix(e.err.Error(), "stream cut: "),
		humanBytes(e.up), e.toStream, humanBytes(e.down), e.fromStream)
}

func (e *cutError) Unwrap() error { return e.err }

// localReader and localWriter keep local's own error, which io.Copy
// mixes with the stream's.
type localReader struct {
	c   net.Conn
	err error
}

func (l *localReader) Read(p []byte) (int, error) {
	n, err := l.c.Read(p)
	if err != nil && err != io.EOF {
		l.err = err
	}
	return n, err
}

type localWriter struct {
	c   net.Conn
	err error
}

func (l *localWriter) Write(p []byte) (int, error) {
	n, err := l.c.Write(p)
	if err != nil {
		l.err = err
	}
	return n, err
}

// closeWrite half-closes c when it can and closes it otherwise.
func closeWrite(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		if hc.CloseWrite() == nil {
			return
		}
	}
	c.Close()
}

// resetConn closes c with a TCP reset when it is a TCP connection, so that
// its peer reads an error (ECONNRESET) rather than EOF; other conns (pipe's
// stdio) are just closed.
func resetConn(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	c.Close()
}

// abortStream ends the stream as a failure, its far end reading a cut
// with code; a stream that cannot say so is closed.
func abortStream(s net.Conn, code int, reason string) {
	if a, ok := s.(interface{ Abort(int, string) error }); ok && a.Abort(code, reason) == nil {
		return
	}
	s.Close()
}
