package wire

// Sessions: many streams on one connection between Tether's own ends and
// the hub (docs/protocol.md, "Many streams on one connection"). Azure's
// clients never meet any of this.
//
// # The session
//
//  1. end → hub: a WebSocket upgrade GET of PathMuxService (a service,
//     with its policy's SAS token in Authorization, as a REST call) or of
//     MuxDevicePath(deviceID, moduleID) (a device, with its device SAS
//     token in Authorization, or its client certificate), offering
//     SubprotocolMux.
//  2. hub → end: 101 selecting SubprotocolMux. Any other answer (404 from
//     a hub without sessions, an upgrade selecting nothing) and the end
//     uses SubprotocolStreamReuse streams instead, as before.
//  3. both ways: binary WebSocket frames whose payloads, concatenated, are
//     one yamux session (github.com/hashicorp/yamux, protocol version 0),
//     the end being yamux's client and the hub its server. A device's
//     session carries streams the hub opens; a service's, streams the
//     service opens.
//
// # A stream on a session
//
// Every stream begins with one header each way (WriteMuxHeader: a 2-byte
// big-endian length, at most MaxMuxHeader, then that many bytes of JSON;
// Tether's ends send the opener's in the frame that opens the stream,
// yamux's SYN on a data frame, which a peer must not rely on),
// and carries from then on exactly what a tether-stream.v1 WebSocket
// carries after its upgrade: WebSocket frames, masked by the end (the
// hub's relay reads them as a server reads a client's), an empty binary
// frame with FIN as the end-of-stream marker, and a close frame each way
// at the end. So the hub's relay serves a session stream as it serves a
// stream's own WebSocket, and its rules (limits, half-close, close codes,
// byte counts) hold alike.
//
// On a service's session:
//
//  1. service → hub: MuxOpen, then, in the same write if it likes, the
//     stream's first frames (early data).
//  2. hub → service: MuxAnswer. Status 200 with Accepted: the stream is
//     paired, frames follow. Anything else ends the stream (closed after
//     the answer: a yamux reset would drop the answer unread), and the
//     early data was never delivered. A stream whose MuxOpen is malformed
//     is reset, with no answer.
//
// On a device's session:
//
//  1. hub → device: MuxRequest (a stream request, as the MQTT topic's),
//     and, right behind it, the service's early frames: the device must
//     read nothing past the header before it decided.
//  2. device → hub: MuxAnswer with the device's status (AnswerAccept or
//     one of the rejections); after a rejection the device closes the
//     stream, discarding whatever came behind the header. A request the
//     device cannot read is reset, and so is a stream the hub gives up
//     on (no answer in time).

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
)

// Paths and subprotocol of sessions.
const (
	// PathMuxService is where a service opens its session.
	PathMuxService = "/$tether/mux/service"
	// PathMuxDevices begins a device's session path (MuxDevicePath).
	PathMuxDevices = "/$tether/mux/devices/"
	// SubprotocolMux is the subprotocol of a session's WebSocket.
	SubprotocolMux = "tether-mux.v1"
)

// PropertyMux is the property the hub adds to a stream request's MQTT
// topic (after $auth: "&$tmux=1") for a device whose client type says it
// speaks sessions: the device may open one (MuxDevicePath) and take the
// stream on it, or ignore the property and join the URL as before.
const PropertyMux = "$tmux"

// MuxDevicePath is the session path of a device, or of its module when
// moduleID is not empty.
func MuxDevicePath(deviceID, moduleID string) string {
	p := PathMuxDevices + url.PathEscape(deviceID)
	if moduleID != "" {
		p += "/modules/" + url.PathEscape(moduleID)
	}
	return p
}

// MaxMuxHeader bounds a session stream's header. A peer announcing more is
// broken: its stream is reset.
const MaxMuxHeader = 4096

// MuxOpen is a service's request for a stream, the POST's content.
type MuxOpen struct {
	DeviceID string `json:"deviceId"`
	ModuleID string `json:"moduleId,omitempty"`
	Name     string `json:"name"`
	// ConnectTimeoutMs and ResponseTimeoutMs are the POST's two timeout
	// headers, in milliseconds; 0 takes the hub's default.
	ConnectTimeoutMs  int64 `json:"connectTimeoutMs,omitempty"`
	ResponseTimeoutMs int64 `json:"responseTimeoutMs,omitempty"`
	// UserAgent is what the POST's User-Agent header would say, for the
	// stream log.
	UserAgent string `json:"userAgent,omitempty"`
}

// MuxRequest is the hub's stream request to a device on its session.
type MuxRequest struct {
	Name     string `json:"name"`
	RID      string `json:"rid"`
	StreamID string `json:"streamId"`
}

// MuxAnswer answers MuxOpen (hub → service) and MuxRequest (device → hub).
type MuxAnswer struct {
	// Status is the POST's HTTP status toward a service (200 when the
	// device answered, accepting or not), the device's status toward the
	// hub.
	Status int `json:"status"`
	// Toward a service only:
	Accepted     bool   `json:"accepted,omitempty"`
	DeviceStatus int    `json:"deviceStatus,omitempty"` // the device's rejection, as HeaderDeviceStatus
	StreamID     string `json:"streamId,omitempty"`
	ErrorCode    string `json:"errorCode,omitempty"` // as HeaderErrorCode: "DeviceNotOnline", ...
	Message      string `json:"message,omitempty"`   // the error body's message
}

// ErrMuxHeader is returned by ReadMuxHeader for a header that is too long
// or not the JSON it should be.
var ErrMuxHeader = errors.New("wire: malformed session stream header")

// WriteMuxHeader writes v as a session stream header.
func WriteMuxHeader(w io.Writer, v any) error {
	b, err := AppendMuxHeader(nil, v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// AppendMuxHeader appends v as a session stream header to b, so that a
// header and the bytes behind it leave in one write.
func AppendMuxHeader(b []byte, v any) ([]byte, error) {
	start := len(b)
	if out, ok := appendMuxJSON(append(b, 0, 0), v); ok {
		n := len(out) - start - 2
		if n > MaxMuxHeader {
			return b, fmt.Errorf("%w: %d bytes, more than %d", ErrMuxHeader, n, MaxMuxHeader)
		}
		binary.BigEndian.PutUint16(out[start:], uint16(n))
		return out, nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	if len(j) > MaxMuxHeader {
		return b, fmt.Errorf("%w: %d bytes, more than %d", ErrMuxHeader, len(j), MaxMuxHeader)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(j)))
	return append(b, j...), nil
}

// ReadMuxHeader reads a session stream header into v, and not one byte
// more.
func ReadMuxHeader(r io.Reader, v any) error {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := int(binary.BigEndian.Uint16(n[:]))
	if size == 0 || size > MaxMuxHeader {
		return fmt.Errorf("%w: length %d", ErrMuxHeader, size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if readMuxJSON(b, v) {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMuxHeader, err)
	}
	return nil
}
