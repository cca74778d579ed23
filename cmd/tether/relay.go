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
// errors. A stream has no half-close (its EOF ends it whole), so the end of
// one direction is passed on at once: local EOF closes the stream, and the
// stream's end half-closes local and stops reading from it, so that
// neither side waits on a peer that is gone.
func relay(local, stream net.Conn, toStream, fromStream string) error {
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(stream, local)
		closeWrite(stream)
		errc <- directionError(toStream, err)
	}()
	go func() {
		_, err := io.Copy(local, stream)
		closeWrite(local)
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
