package service

import "github.com/tether-io/tether/internal/wsconn"

// CloseError is the error a stream's Read returns when the stream was cut
// rather than ended. The net.Conn of OpenStream reads io.EOF only for a
// clean end: the device's end-of-stream marker (it sends no more; writes
// still reach it) or its close frame 1000. Anything else is a cut: the hub
// stopped or was killed, the device dropped (close 1001 "peer
// disconnected"), a limit ended the stream, the device's local connection
// was reset (CodeReset). Data read before the error came in order; what
// was in flight is lost, so the transfer is incomplete.
//
// Code is the close code the hub sent, CodeAbnormal when the connection
// ended without a close frame (Err holds the network error), or 1002 for
// a protocol error. The chain holds ErrStreamCut.
//
// Over a Tether hub the stream's conn also has these methods, reached by
// a type assertion (docs/protocol.md, "What EOF and close mean"):
//
//	CloseWrite() error                   // send the end-of-stream marker
//	Done() <-chan struct{}               // closed once the stream is over both ways
//	Err() error                          // nil, or the *CloseError that cut it; final once Done is closed
//	Abort(code int, reason string) error // end it as a failure, e.g. with CodeReset
type CloseError = wsconn.CloseError

// ErrStreamCut is in the chain of every *CloseError.
var ErrStreamCut = wsconn.ErrStreamCut

// Close codes a stream's end reports or sends.
const (
	// CodeGoingAway (1001): the hub is shutting down, the device's
	// connection dropped ("peer disconnected"), or the device stopped.
	CodeGoingAway = wsconn.CodeGoingAway
	// CodeAbnormal (1006): the connection ended without a close frame (the
	// hub was killed, the network failed). Never sent.
	CodeAbnormal = wsconn.CodeAbnormal
	// CodeReset (4000): the device's local TCP connection was reset; send
	// it with Abort when yours is.
	CodeReset = wsconn.CodeReset
)
