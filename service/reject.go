package service

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/tether-io/tether/wire"
)

// Why a device rejected a stream, as far as the hub says (RejectError).
var (
	// ErrNotAllowed: the device does not serve a stream of that name
	// (not in tether agent's --allow). Azure's device SDKs answer every
	// rejection so, whatever their reason.
	ErrNotAllowed = errors.New("the device does not allow this stream")
	// ErrTargetUnreachable: the device serves the name but could not
	// connect to the stream's target (the service it forwards to).
	ErrTargetUnreachable = errors.New("the device could not connect to the stream's target")
	// ErrDeviceBusy: the device had more stream requests waiting than it
	// takes at once; trying again a moment later may succeed.
	ErrDeviceBusy = errors.New("the device is busy")
)

// RejectError is the error of a stream the device rejected. A Tether hub
// passes on the status of the device's answer (wire.HeaderDeviceStatus);
// Azure's, or a Tether hub older than this SDK, say no more than that the
// device rejected the stream, and Status is 0. errors.Is tells the reasons
// apart: ErrNotAllowed, ErrTargetUnreachable, or ErrRejected alone when
// the hub did not say.
type RejectError struct {
	Status int    // the device's answer, e.g. 400 or 503; 0 when unknown
	Reason string // what Status means; "" when unknown
}

func (e *RejectError) Error() string {
	if e.Reason == "" {
		return ErrRejected.Error()
	}
	return ErrRejected.Error() + ": " + e.Reason
}

// Unwrap yields ErrRejected, and the sentinel of the reason when the
// hub said it.
func (e *RejectError) Unwrap() []error {
	switch {
	case e.Status == wire.AnswerNotAllowed:
		return []error{ErrRejected, ErrNotAllowed}
	case wire.TargetFailure(e.Status):
		return []error{ErrRejected, ErrTargetUnreachable}
	case e.Status == wire.AnswerBusy:
		return []error{ErrRejected, ErrDeviceBusy}
	}
	return []error{ErrRejected}
}

// rejectError reads the hub's answer to a rejected stream request.
func rejectError(h http.Header) *RejectError {
	status, err := strconv.Atoi(strings.TrimSpace(h.Get(wire.HeaderDeviceStatus)))
	if err != nil {
		return &RejectError{}
	}
	return rejectStatus(status)
}

// rejectStatus is the error of a stream the device rejected with status,
// as the hub passed it on; 0 when it did not.
func rejectStatus(status int) *RejectError {
	if status < 100 || status > 999 {
		return &RejectError{}
	}
	e := &RejectError{Status: status}
	switch status {
	case wire.AnswerNotAllowed:
		e.Reason = "not allowed: it serves no stream of this name"
	case wire.AnswerTargetRefused:
		e.Reason = "its target refused the connection"
	case wire.AnswerTargetTimeout:
		e.Reason = "connecting to its target timed out"
	case wire.AnswerTargetFailed:
		e.Reason = "it could not connect to its target"
	case wire.AnswerBusy:
		e.Reason = "busy: too many stream requests waiting on the device"
	default:
		e.Reason = "it answered " + strconv.Itoa(status)
	}
	return e
}
