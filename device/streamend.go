package device

import "github.com/tether-io/tether/internal/wsconn"

// CloseError is the error a stream's Read returns when the stream was cut
// rather than ended. The net.Conn of Request.Accept reads io.EOF only for
// a clean end: the service's end-of-stream marker (it sends no more;
// writes still reach it) or its close frame 1000. Anything else is a cut
// (the hub stopped or was killed, the service dropped, a limit ended the
// stream, the service's local connection was reset): data read before the
// error came in order, what was in flight is lost.
//
// Code is the close code received (CodeGoingAway, 1011, CodeReset...),
// CodeAbnormal when the connection ended without a close frame (Err holds
// the network error), or 1002 for a protocol error. The chain holds
// ErrStreamCut. The conn's other methods (CloseWrite, Done, Err, Abort)
// are those the service SDK's CloseError lists, with the same meaning.
type CloseError = wsconn.CloseError

// ErrStreamCut is in the chain of every *CloseError.
var ErrStreamCut = wsconn.ErrStreamCut

// Close codes: CodeGoingAway (1001) for a hub, a peer or its connection
// going away, CodeAbnormal (1006, never sent) for a connection that ended
// without a close frame, CodeReset (4000) for a local connection that was
// reset, which an agent sends with Abort so that the service resets its
// own.
const (
	CodeGoingAway = wsconn.CodeGoingAway
	CodeAbnormal  = wsconn.CodeAbnormal
	CodeReset     = wsconn.CodeReset
)
