package wire

// An operator ends an open stream with DELETE /streams/{streamId}, the id
// being the one GET /streams lists and the stream-log record holds. Azure
// has no such route: it is Tether's, and so is its error code. The node
// that answers finds the node the stream is homed on; the stream ends with
// close 1008 to both sides, and its record says closedBy "hub" with the
// reason KillReason(policy). See docs/protocol.md.

// CodeStreamNotFound is the error code of a kill for a stream that no
// node holds open (it ended, or never was).
const CodeStreamNotFound = 404910 // StreamNotFound

// KillReason is the close reason, and the stream-log record's
// closeReason, of a stream ended by an operator whose token was of the
// access policy named policy.
func KillReason(policy string) string { return "killed by policy " + policy }
