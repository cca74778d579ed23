package wire

// A device answers a stream request with a status on
// $iothub/streams/res/{status}/?$rid={rid} (ResponseTopic). Azure knows two:
// 200 accepts and 400 rejects, and its hub tells the service no more than
// iothub-streaming-is-accepted: False. Tether's agent rejects for two
// different reasons, which call for different fixes: the stream's name is
// not one it serves (the service asked for the wrong name, or the agent's
// --allow lacks it), or it serves the name but could not connect to the
// name's target (the local service is down). It answers each with its own
// status, and Tether's hub passes the status of any rejection on to the
// service in HeaderDeviceStatus, which Azure's clients ignore: they see the
// same False as ever. See docs/protocol.md.
const (
	AnswerAccept = 200
	// AnswerNotAllowed: the device does not serve a stream of that name.
	// It is also what Azure's device SDKs answer for any rejection.
	AnswerNotAllowed = 400
	// AnswerTargetFailed: the device serves the name, but connecting to
	// its target failed for a reason other than the two below (no route
	// to the host, a name that does not resolve).
	AnswerTargetFailed = 502
	// AnswerTargetRefused: the device serves the name, but its target
	// refused the connection: nothing listens there.
	AnswerTargetRefused = 503
	// AnswerTargetTimeout: the device serves the name, but connecting to
	// its target timed out.
	AnswerTargetTimeout = 504
	// AnswerBusy: the device has more stream requests waiting than it
	// takes at once; the same request may succeed a moment later.
	AnswerBusy = 429
)

// HeaderDeviceStatus is a Tether-only header of the hub's answer to a
// stream request the device rejected (iothub-streaming-is-accepted:
// False), on the POST's answer and on the one-request opening's alike: the
// status the device answered with, in decimal.
const HeaderDeviceStatus = "tether-stream-device-status"

// TargetFailure reports whether status is one of the answers of a device
// that serves the stream's name but could not connect to its target.
func TargetFailure(status int) bool {
	return status == AnswerTargetFailed || status == AnswerTargetRefused || status == AnswerTargetTimeout
}
