package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error codes of the Azure error body and the iothub-errorcode header.
const (
	CodeUnauthorized   = 401002 // IotHubUnauthorizedAccess
	CodeDeviceNotFound = 404001 // DeviceNotFound
	CodeNotOnline      = 404103 // DeviceNotOnline
	CodeGatewayTimeout = 504101 // GatewayTimeout
	CodeThrottled      = 429001 // ThrottlingException
	CodeBadRequest     = 400004 // ArgumentInvalid
	CodeConflict       = 409001 // DeviceAlreadyExists
	CodePrecondition   = 412002 // PreconditionFailed
	CodeServerError    = 500001 // ServerError
)

// CodeName is the iothub-errorcode header value for a code.
func CodeName(code int) string {
	switch code {
	case CodeUnauthorized:
		return "IotHubUnauthorizedAccess"
	case CodeDeviceNotFound:
		return "DeviceNotFound"
	case CodeNotOnline:
		return "DeviceNotOnline"
	case CodeGatewayTimeout:
		return "GatewayTimeout"
	case CodeThrottled:
		return "ThrottlingException"
	case CodeBadRequest:
		return "ArgumentInvalid"
	case CodeConflict:
		return "DeviceAlreadyExists"
	case CodePrecondition:
		return "PreconditionFailed"
	case CodeCertificateNotFound:
		return "CertificateNotFound"
	case CodePolicyNotFound:
		return "PolicyNotFound"
	case CodePolicyExists:
		return "PolicyAlreadyExists"
	case CodeStreamNotFound:
		return "StreamNotFound"
	default:
		return "ServerError"
	}
}

// ErrorBody is the JSON body of an error response. Azure nests a JSON
// document in a string, and clients parse it that way.
type ErrorBody struct {
	Message          string `json:"Message"`
	ExceptionMessage string `json:"ExceptionMessage"`
}

type innerError struct {
	ErrorCode int               `json:"errorCode"`
	Message   string            `json:"message"`
	Info      map[string]string `json:"info"`
	Timestamp string            `json:"timestampUtc,omitempty"`
}

// EncodeError returns the body of an error response with code and message.
func EncodeError(code int, message string) []byte {
	inner, _ := json.Marshal(innerError{
		ErrorCode: code, Message: message, Info: map[string]string{},
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano),
	})
	b, _ := json.Marshal(ErrorBody{Message: string(inner)})
	return b
}

// DecodeError reads the code and message of an error body. It returns
// code 0 and the raw text when the body is not of that shape.
func DecodeError(body []byte) (code int, message string) {
	var outer ErrorBody
	if err := json.Unmarshal(body, &outer); err != nil || outer.Message == "" {
		return 0, strings.TrimSpace(string(body))
	}
	var inner innerError
	if err := json.Unmarshal([]byte(outer.Message), &inner); err != nil {
		return 0, outer.Message
	}
	return inner.ErrorCode, inner.Message
}

// Device is the registry's device identity document, in Azure's shape.
type Device struct {
	DeviceID                   string         `json:"deviceId"`
	ModuleID                   string         `json:"moduleId,omitempty"`
	GenerationID               string         `json:"generationId"`
	ETag                       string         `json:"etag"`
	Status                     string         `json:"status"` // StatusEnabled or StatusDisabled
	StatusReason               string         `json:"statusReason,omitempty"`
	StatusUpdatedTime          time.Time      `json:"statusUpdatedTime"`
	ConnectionState            string         `json:"connectionState"` // Connected or Disconnected
	ConnectionStateUpdatedTime time.Time      `json:"connectionStateUpdatedTime"`
	LastActivityTime           time.Time      `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int            `json:"cloudToDeviceMessageCount"`
	Authentication             Authentication `json:"authentication"`
	Capabilities               Capabilities   `json:"capabilities"`
	// Takeovers is absent until a session of the device was taken over.
	Takeovers *Takeovers `json:"takeovers,omitempty"`
	// DeviceClientType is Tether's own too: what the device's latest
	// connection named itself in its MQTT username (ClientType), which
	// for Tether's agent says its version (tether-go/0.3.0). Absent when
	// the device never connected or named nothing.
	DeviceClientType string `json:"deviceClientType,omitempty"`
}

// Device status and connection state values.
const (
	StatusEnabled   = "enabled"
	StatusDisabled  = "disabled"
	StateConnected  = "Connected"
	StateDisconnect = "Disconnected"
)

// Authentication is a device's credentials.
type Authentication struct {
	Type           string          `json:"type"` // "sas"
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
}

// SymmetricKey holds a device's two base64 keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// X509Thumbprint is accepted for shape compatibility.
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// Capabilities is part of Azure's document; Tether keeps it as given.
type Capabilities struct {
	IotEdge bool `json:"iotEdge"`
}

// Endpoints is the answer of GET /devicestreams.
type Endpoints struct {
	StreamingEndpoints []string `json:"streamingEndpoints"`
}

// StreamRequest is what the hub sends a device: a stream's name and where
// and how to join it.
type StreamRequest struct {
	Name  string // stream name
	RID   string // request id, echoed in the answer
	URL   string // wss://.../bridges/...
	Token string // the device side's bearer token
	// Mux says the hub takes this stream on the device's session too
	// (PropertyMux): a device that speaks sessions may open one and
	// wait for the stream there rather than join URL.
	Mux bool
}

// Errors of the topic parsers.
var (
	ErrTopic = errors.New("wire: malformed stream topic")
)

// MaxStreamNameLen bounds a stream name, in bytes. Azure documents no
// limit; this one keeps the request topic, which carries the name once as
// it is and once escaped twice inside $url (up to 5 bytes for each), far
// below the 65,535 bytes an MQTT topic may hold, whatever the name.
const MaxStreamNameLen = 1024

// ErrStreamName is wrapped by ValidateStreamName's errors.
var ErrStreamName = errors.New("invalid stream name")

// ValidateStreamName checks that name can be one level of the request
// topic (Topic) that a device splits the way the hub meant: 1 to
// MaxStreamNameLen bytes of UTF-8 without "/" (a level's end), "?" (the
// properties' start), the MQTT wildcards "+" and "#", or NUL, which MQTT
// forbids in a topic. Nor may it be "." or "..": as a segment of the
// streaming URL's path (BridgePath), HTTP clients and servers would
// resolve it away, and no side could join the stream.
func ValidateStreamName(name string) error {
	switch {
	case name == "" || len(name) > MaxStreamNameLen:
		return fmt.Errorf("%w: a stream name is 1 to %d bytes", ErrStreamName, MaxStreamNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q is not UTF-8", ErrStreamName, name)
	case strings.ContainsAny(name, "/?#+\x00"):
		return fmt.Errorf("%w: %q holds one of / ? # + or NUL", ErrStreamName, name)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q is a dot segment of the streaming URL", ErrStreamName, name)
	}
	return nil
}

// Topic is the MQTT topic that carries r to the device:
//
//	$iothub/streams/POST/{name}/?$rid={rid}&$url={escaped url}&$auth={token}
//
// followed by "&$tmux=1" when Mux is set. Only $url is escaped; RID and
// Token must not contain = & / % + ? #.
func (r StreamRequest) Topic() string {
	t := TopicRequestPrefix + r.Name + "/?$rid=" + r.RID + "&$url=" + url.QueryEscape(r.URL) + "&$auth=" + r.Token
	if r.Mux {
		t += "&" + PropertyMux + "=1"
	}
	return t
}

// ParseStreamRequest parses a request topic.
func ParseStreamRequest(topic string) (StreamRequest, error) {
	var r StreamRequest
	rest, ok := strings.CutPrefix(topic, TopicRequestPrefix)
	if !ok {
		return r, fmt.Errorf("%w: %q does not start with %s", ErrTopic, topic, TopicRequestPrefix)
	}
	name, query, ok := strings.Cut(rest, "/?")
	if !ok || name == "" || strings.Contains(name, "/") {
		return r, fmt.Errorf("%w: no stream name", ErrTopic)
	}
	r.Name = name
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "$rid":
			r.RID = v
		case "$url":
			u, err := url.QueryUnescape(v)
			if err != nil {
				return r, fmt.Errorf("%w: $url: %v", ErrTopic, err)
			}
			r.URL = u
		case "$auth":
			r.Token = v
		case PropertyMux:
			r.Mux = v == "1"
		}
	}
	if r.RID == "" || r.URL == "" || r.Token == "" {
		return r, fmt.Errorf("%w: $rid, $url and $auth are required", ErrTopic)
	}
	return r, nil
}

// ResponseTopic is the topic of a device's answer: status 200 accepts, 400
// rejects.
func ResponseTopic(status int, rid string) string {
	return TopicResponsePrefix + strconv.Itoa(status) + "/?$rid=" + rid
}

// ParseResponse parses an answer topic.
func ParseResponse(topic string) (status int, rid string, err error) {
	rest, ok := strings.CutPrefix(topic, TopicResponsePrefix)
	if !ok {
		return 0, "", fmt.Errorf("%w: %q does not start with %s", ErrTopic, topic, TopicResponsePrefix)
	}
	code, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return 0, "", fmt.Errorf("%w: no query", ErrTopic)
	}
	status, err = strconv.Atoi(code)
	if err != nil || status < 100 || status > 999 {
		return 0, "", fmt.Errorf("%w: status %q", ErrTopic, code)
	}
	for kv := range strings.SplitSeq(query, "&") {
		if k, v, _ := strings.Cut(kv, "="); k == "$rid" {
			rid = v
		}
	}
	if rid == "" {
		return 0, "", fmt.Errorf("%w: no $rid", ErrTopic)
	}
	return status, rid, nil
}

// BridgePath is the path of a stream's streaming URL:
// /bridges/{hub}/{deviceId}/{streamName}/{streamId}, each part escaped.
// A stream name is escaped too, for ParseBridgePath unescapes every part:
// a name holding "%" or a space must come back as itself. The names SDKs
// use (letters, digits, "-", "_", ".") need no escaping, so their URLs
// are as Azure's.
func BridgePath(hub, deviceID, streamName, streamID string) string {
	return PathBridges + url.PathEscape(hub) + "/" + url.PathEscape(deviceID) + "/" + url.PathEscape(streamName) + "/" + url.PathEscape(streamID)
}

// ParseBridgePath splits an escaped bridge path (URL.EscapedPath) into its
// parts.
func ParseBridgePath(escapedPath string) (hub, deviceID, streamName, streamID string, err error) {
	rest, ok := strings.CutPrefix(escapedPath, PathBridges)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 4 {
		return "", "", "", "", fmt.Errorf("wire: %q is not /bridges/{hub}/{device}/{stream}/{id}", escapedPath)
	}
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil || u == "" {
			return "", "", "", "", fmt.Errorf("wire: bad bridge path segment %d", i)
		}
		parts[i] = u
	}
	return parts[0], parts[1], parts[2], parts[3], nil
}

// StreamLog is one record of a stream invocation, in the shape of Azure's
// DeviceStreams resource logs: Properties is a JSON string (of
// StreamLogProperties), as Azure writes it.
type StreamLog struct {
	Time              time.Time `json:"time"`
	OperationName     string    `json:"operationName"` // "invoke"
	Category          string    `json:"category"`      // "DeviceStreams"
	ResultType        string    `json:"resultType"`    // "Success" or "Failure"
	ResultDescription string    `json:"resultDescription"`
	Level             string    `json:"level"` // "Information" or "Error"
	DurationMs        int64     `json:"durationMs"`
	Properties        string    `json:"properties"`
	// Sequence is the record's place in the hub's stream logs, set by
	// GET /streamlogs as it reads the record (the stored record has
	// none): a reader that lost its connection resumes after the last
	// one it saw (?after=), and misses none and sees none twice. It is
	// Tether's; Azure's records have no such field.
	Sequence uint64 `json:"sequence,omitempty"`
}

// StreamLogProperties are a record's properties: Azure's, then Tether's.
type StreamLogProperties struct {
	DeviceID     string `json:"deviceId"`
	ModuleID     string `json:"moduleId,omitempty"`
	SDKVersion   string `json:"sdkVersion"`
	RequestSize  int    `json:"requestSize"`
	ResponseSize int    `json:"responseSize"`
	StatusCode   int    `json:"statusCode"`
	RequestName  string `json:"requestName"` // the stream name
	Direction    string `json:"direction"`   // "c2d"

	StreamID       string `json:"streamId"`
	Result         string `json:"result"` // one of the Result* constants
	Policy         string `json:"policy"` // the access policy that asked
	Node           string `json:"node"`   // the stream's home node
	SetupMs        int64  `json:"setupMs"`
	LifetimeMs     int64  `json:"lifetimeMs"`
	BytesToDevice  int64  `json:"bytesToDevice"`
	BytesToService int64  `json:"bytesToService"`
	ClosedBy       string `json:"closedBy,omitempty"` // service, device, hub or window
	CloseReason    string `json:"closeReason,omitempty"`
	// ServiceAddress is the remote address (host:port) of the service's
	// stream request, the POST or the one-request upgrade, as the hub
	// saw it: who opened the stream, beyond the policy's name.
	ServiceAddress string `json:"serviceAddress,omitempty"`
	// Recorded is Tether's own: the stream was a terminal session the
	// node recorded (tetherd --record-terminals), whose recording that
	// node serves at GET /streams/{streamId}/recording.
	Recorded bool `json:"recorded,omitempty"`
}

// Results of a stream invocation.
const (
	ResultAccepted = "accepted"
	ResultRejected = "rejected"
	ResultOffline  = "offline"
	ResultTimedOut = "timedOut"
	ResultError    = "error"
	// ResultInterrupted is Tether's own: the stream's home node stopped
	// without ending it (killed, or its machine lost), and the record was
	// written at that node's next start. Bytes and lifetime are unknown.
	ResultInterrupted = "interrupted"
)

// Props decodes the record's properties.
func (l StreamLog) Props() (StreamLogProperties, error) {
	var p StreamLogProperties
	err := json.Unmarshal([]byte(l.Properties), &p)
	return p, err
}

// StreamInfo describes a stream open now (GET /streams): waiting for a
// side, or relaying.
type StreamInfo struct {
	ID             string    `json:"streamId"`
	DeviceID       string    `json:"deviceId"`
	Name           string    `json:"name"`
	Node           string    `json:"node"` // the stream's home node
	Opened         time.Time `json:"opened"`
	Paired         bool      `json:"paired"` // both sides joined
	BytesToDevice  int64     `json:"bytesToDevice"`
	BytesToService int64     `json:"bytesToService"`
	Policy         string    `json:"policy,omitempty"` // the access policy that opened it
}
