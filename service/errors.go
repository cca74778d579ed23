package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/tether-io/tether/internal/certerr"
	"github.com/tether-io/tether/wire"
)

// Sentinel errors. Hub answers come back as *APIError, whose Unwrap yields
// one of these, so callers test with errors.Is and still see the hub's
// own message when they print the error.
var (
	ErrDeviceNotFound = errors.New("device not found")
	ErrDeviceOffline  = errors.New("device not connected")
	ErrRejected       = errors.New("stream rejected by the device")
	ErrTimeout        = errors.New("device did not answer in time")
	ErrUnauthorized   = errors.New("unauthorized")
	ErrThrottled      = errors.New("throttled by the hub")
	ErrDeviceExists   = errors.New("device already exists")
	ErrPrecondition   = errors.New("precondition failed")
	ErrPolicyNotFound = errors.New("access policy not found")
	ErrPolicyExists   = errors.New("access policy already exists")
	// ErrStreamNotFound: no hub node holds an open stream with the id
	// given to KillStream (it ended, or the id is wrong).
	ErrStreamNotFound = errors.New("no open stream with that id")
)

// APIError is an error answer of the hub: the HTTP status, the Azure error
// code (from the body, or the iothub-errorcode header when the body has
// none) and the hub's message.
type APIError struct {
	StatusCode int
	Code       int
	Message    string
}

func (e *APIError) Error() string {
	s := "hub answered " + strconv.Itoa(e.StatusCode)
	if e.Code != 0 {
		s += " (" + strconv.Itoa(e.Code) + " " + wire.CodeName(e.Code) + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap maps the answer to a sentinel. The code is more precise than the
// status (404 means both "no such device" and "device offline"), so it
// decides first; the status covers hubs and proxies that send no code.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case wire.CodeDeviceNotFound:
		return ErrDeviceNotFound
	case wire.CodeNotOnline:
		return ErrDeviceOffline
	case wire.CodeGatewayTimeout:
		return ErrTimeout
	case wire.CodeUnauthorized:
		return ErrUnauthorized
	case wire.CodeThrottled:
		return ErrThrottled
	case wire.CodeConflict:
		return ErrDeviceExists
	case wire.CodePrecondition:
		return ErrPrecondition
	case wire.CodeCertificateNotFound:
		return ErrCertificateNotFound
	case wire.CodePolicyNotFound:
		return ErrPolicyNotFound
	case wire.CodePolicyExists:
		return ErrPolicyExists
	case wire.CodeStreamNotFound:
		return ErrStreamNotFound
	}
	switch e.StatusCode {
	case 401, 403:
		return ErrUnauthorized
	case 429:
		return ErrThrottled
	case 409:
		return ErrDeviceExists
	case 412:
		return ErrPrecondition
	case 504:
		return ErrTimeout
	}
	return nil
}

// codeByName inverts wire.CodeName for the iothub-errorcode header.
func codeByName(name string) int {
	for _, c := range []int{
		wire.CodeUnauthorized, wire.CodeDeviceNotFound, wire.CodeNotOnline,
		wire.CodeGatewayTimeout, wire.CodeThrottled, wire.CodeBadRequest,
		wire.CodeConflict, wire.CodePrecondition, wire.CodeServerError,
		wire.CodeCertificateNotFound, wire.CodePolicyNotFound, wire.CodePolicyExists,
		wire.CodeStreamNotFound,
	} {
		if wire.CodeName(c) == name {
			return c
		}
	}
	return 0
}

// hubError wraps a failure to talk to the hub at all. It keeps the
// *url.Error in the chain for errors.As, but prints only its cause: the
// method and full URL add nothing but noise to "connecting to hub ...".
type hubError struct {
	addr string
	err  error
}

func (e *hubError) Error() string {
	cause := e.err
	var ue *url.Error
	if errors.As(cause, &ue) {
		cause = ue.Err
	}
	if f, ok := certerr.Find(e.err); ok {
		return fmt.Sprintf("connecting to hub %s: %s (%s)", e.addr, f, f.SDKFix())
	}
	return fmt.Sprintf("connecting to hub %s: %v", e.addr, cause)
}

func (e *hubError) Unwrap() error { return e.err }

// isUntrusted reports whether err is a failed verification of the hub's
// certificate, the usual first-run mistake with a self-signed hub.
func isUntrusted(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
	)
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}
