package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// relay copies both ways between a local TCP connection (the forwarder's
// client, the agent's target) and a stream, and returns when both
// directions have ended; toStream and fromStream name the directions in
// errors.
//
// EOF is passed on one direction at a time, so a client that half-closes
// (nc -N, ssh host 'cat > f', an HTTP/1.0 request) still gets its answer:
// local EOF half-closes the stream (the stream's CloseWrite, which closes
// it whole when the peer cannot half-close) while the answer goes on
// flowing to local; the stream's EOF half-closes local while local's bytes
// go on flowing to the stream. Once the stream is over both ways (its Done)
// relay stops reading local, so that nothing waits on a peer that is gone.
// A stream without Done (no half-close) is over at its first EOF.
func relay(local, stream net.Conn, toStream, fromStream string) error {
	errc := make(chan error, 2)
	// Closed when the local → stream direction ended: the watch below has
	// nothing left to stop then.
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		_, err := io.Copy(stream, local)
		closeWrite(stream)
		errc <- directionError(toStream, err)
	}()
	go func() {
		_, err := io.Copy(local, stream)
		closeWrite(local)
		if d, ok := stream.(interface{ Done() <-chan struct{} }); ok && err == nil {
			// EOF may be the peer's half-close: local's bytes still go
			// through until the stream ends whole.
			select {
			case <-d.Done():
			case <-upDone:
			}
		}
		// Nothing local sends now could reach the other end.
		local.SetReadDeadline(time.Now())
		errc <- directionError(fromStream, err)
	}()
	return errors.Join(<-errc, <-errc)
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

// directionError drops the errors relay causes itself when it ends a
// direction (a closed connection, an expired read deadline); the others
// say which way they happened.
func directionError(dir string, err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	return fmt.Errorf("%s: %w", dir, err)
}
