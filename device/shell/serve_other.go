//go:build !unix

package shell

import (
	"context"
	"net"
)

func supported() error { return ErrUnsupported }

// Serve is never reached here: New fails.
func (s *Server) Serve(_ context.Context, conn net.Conn) Result {
	conn.Close()
	return Result{Status: -1, Err: ErrUnsupported}
}
