// Package wire holds the parts of the device-streams protocol that the hub
// and both SDKs must agree on byte for byte: paths, subprotocols, header
// names, MQTT topics, the streaming URL, the registry's device document and
// the error body. Keeping them in one package that imports nothing of
// Tether's lets the SDKs share them without linking hub code.
//
// The protocol is Azure IoT Hub's device streams, so that Azure's SDKs work
// against a Tether hub and Tether's against Azure's; what Tether adds is
// negotiated or ignored by Azure's clients. docs/protocol.md describes it
// for readers, with the reasons; what follows is who sends what, in order.
//
// A hub node has two ports. HTTPS carries the REST API, the streaming
// endpoint (PathBridges) and MQTT over WebSocket (PathMQTTWebSocket, with
// SubprotocolMQTT); MQTT over TLS carries the control channel alone.
//
// # The control channel
//
// A device keeps one MQTT 3.1.1 connection to the hub:
//
//  1. device → hub: CONNECT with client id {deviceId} (or
//     {deviceId}/{moduleId}), username
//     {host}/{deviceId}/?api-version=APIVersion&DeviceClientType=...
//     (Tether's SDK's type begins with DeviceClientTypeTether) and a
//     device SAS token as password.
//  2. hub → device: CONNACK 0; 5 for a refusal of the credentials,
//     whatever failed; 3 for a source or identity over a limit.
//  3. device → hub: SUBSCRIBE TopicRequestFilter and TopicResponseFilter,
//     QoS 0. The hub routes streams to the device from then on; it may
//     subscribe to nothing else, and publish only answers.
//  4. hub → device, for each stream: PUBLISH QoS 0, empty payload, on
//     StreamRequest.Topic (TopicRequestPrefix{name}/?$rid&$url&$auth),
//     to that one device only.
//  5. device → hub: PUBLISH QoS 0 or 1, empty payload, on
//     ResponseTopic(status, rid): AnswerAccept, or a rejection (the Answer*
//     constants). The hub consumes it and delivers it to no one.
//  6. hub → device, only to Tether's SDK and only when a newer connection
//     with the same client id took the session over: PUBLISH QoS 0 on
//     TakenOverTopic(by), then DISCONNECT. Azure's SDKs get the DISCONNECT
//     alone.
//
// PINGREQ and PINGRESP keep the connection alive in between.
//
// # A stream
//
//  1. service → hub: POST /twins/{deviceId}/streams/{name} (or
//     .../modules/{moduleId}/streams/{name}), a service SAS token of a
//     policy with ServiceConnect, HeaderConnectTimeout (the handshake
//     window) and HeaderResponseTimeout (how long to wait for the device).
//  2. hub ↔ device: steps 4 and 5 of the control channel. The request's
//     $url is the streaming URL, wss://{host}BridgePath(...), and $auth the
//     device side's token.
//  3. hub → service: 200 with HeaderIsAccepted "True", HeaderURL and
//     HeaderAuthToken (the service side's token); 200 with "False" and
//     HeaderDeviceStatus when the device rejected; or an error status with
//     HeaderErrorCode and an ErrorBody (EncodeError).
//  4. device and service → hub, in any order: a WebSocket upgrade of the
//     streaming URL with "Authorization: Bearer {token}"; the token alone
//     decides the side. Tether's SDKs offer SubprotocolStreamReuse and
//     SubprotocolStream, Azure's none or "MQTT"; the hub selects the first
//     of Tether's two that a side lists, or nothing. The first side waits
//     for its peer until the handshake window ends.
//  5. both ways: data frames relayed as they came, opcode and FIN kept. On
//     SubprotocolStream an empty binary frame with FIN is the end-of-stream
//     marker: that side sends no more, and the other direction goes on.
//  6. the end: a close frame each way, the hub sending one to each side
//     still there. On SubprotocolStreamReuse the connection is HTTP/1.1
//     again and carries the next upgrade (step 4 of the next stream).
//
// Tether's service SDK folds steps 1, 3 and 4 of the service side into one
// request: a GET upgrade on the path of step 1. Every answer to it carries
// HeaderOneRequest; one without it is a hub that has no such thing, and the
// SDK makes the POST.
package wire

// Paths on a hub's HTTPS port that are not REST routes.
const (
	// PathMQTTWebSocket is where a device opens MQTT over WebSocket, with
	// SubprotocolMQTT.
	PathMQTTWebSocket = "/$iothub/websocket"
	// PathBridges begins every streaming URL's path (BridgePath): the
	// streaming endpoint serves everything under it.
	PathBridges = "/bridges/"
)

// WebSocket subprotocols.
const (
	// SubprotocolMQTT is MQTT's, at PathMQTTWebSocket. Tokens compare
	// without regard to case, since the Azure C device SDK offers "MQTT",
	// and the hub selects it as the client spelled it.
	SubprotocolMQTT = "mqtt"
	// SubprotocolStream is Tether's on the streaming endpoint: an empty
	// binary frame with FIN is the end-of-stream marker. A hub selecting
	// it promises to relay the marker to a peer that speaks it too, and
	// never to relay an empty binary frame with another meaning; toward a
	// peer that does not, the marker ends the stream as a close would.
	SubprotocolStream = "tether-stream.v1"
	// SubprotocolStreamReuse is SubprotocolStream plus connection reuse:
	// once a stream ended with a close frame each way, the connection is
	// HTTP/1.1 again and may carry the next upgrade request, so a client
	// of many streams pays one TLS handshake per connection rather than
	// one per stream.
	SubprotocolStreamReuse = "tether-stream.v2"
)

// HTTP headers of the stream-creation call (service → hub → service).
const (
	HeaderConnectTimeout  = "iothub-streaming-connect-timeout-in-seconds"
	HeaderResponseTimeout = "iothub-streaming-response-timeout-in-seconds"
	HeaderIsAccepted      = "iothub-streaming-is-accepted"
	HeaderURL             = "iothub-streaming-url"
	HeaderAuthToken       = "iothub-streaming-auth-token"
	HeaderErrorCode       = "iothub-errorcode"
)

// HeaderOneRequest marks every answer of Tether's one-request stream
// opening (a WebSocket upgrade on the stream request's path, see
// docs/protocol.md), so that a client tells them from the answer of a hub
// that has no such thing (Azure's) and falls back to the POST.
const HeaderOneRequest = "tether-stream-one-request"

// APIVersion is the api-version Tether's SDKs send; the hub accepts any.
const APIVersion = "2020-09-30"

// MQTT topics of the device control channel. A device subscribes to the
// two filters and to nothing else; the prefixes begin the topics they
// match.
const (
	TopicRequestFilter  = "$iothub/streams/POST/#"
	TopicResponseFilter = "$iothub/streams/res/#"
	// TopicRequestPrefix begins a stream request (StreamRequest.Topic),
	// hub → device.
	TopicRequestPrefix = "$iothub/streams/POST/"
	// TopicResponsePrefix begins a device's answer (ResponseTopic),
	// device → hub.
	TopicResponsePrefix = "$iothub/streams/res/"
)
