package wire

import (
	"net/url"
	"strings"
	"time"
)

// A session is taken over when a newer connection with the same MQTT client
// id replaces it, as Azure IoT Hub does: the new connection wins and the
// old one is dropped. MQTT 3.1.1 has no way to tell the old connection why,
// and a device that does not know reconnects at once and takes the session
// back: two agents holding one device's key (a cloned SD card) knock each
// other off for ever. So the hub tells Tether's own device SDK, and only
// it, in a message of Tether's own before it drops the connection; an
// Azure SDK sees exactly what Azure would send it. See docs/protocol.md.

// DeviceClientTypeTether begins the DeviceClientType of Tether's device SDK
// (in the MQTT username's query, where Azure's SDKs name themselves too).
// The hub sends TopicTakenOver only to a client that names itself so.
const DeviceClientTypeTether = "tether-go/"

// TopicTakenOver is the topic of the hub's notice that a newer connection
// took the session over, sent QoS 0 to the session it replaces just before
// the hub drops it, with an empty payload:
//
//	$tether/session/taken-over?by={escaped remote address of the new connection}
const TopicTakenOver = "$tether/session/taken-over"

// TakenOverTopic is the notice for a session that the connection from
// remote address by took over.
func TakenOverTopic(by string) string {
	return TopicTakenOver + "?by=" + url.QueryEscape(by)
}

// ParseTakenOver reports whether topic is a takeover notice, and the new
// connection's address it names ("" when it names none).
func ParseTakenOver(topic string) (by string, ok bool) {
	rest, ok := strings.CutPrefix(topic, TopicTakenOver)
	if !ok || (rest != "" && rest[0] != '?') {
		return "", false
	}
	q, err := url.ParseQuery(strings.TrimPrefix(rest, "?"))
	if err != nil {
		return "", true
	}
	return q.Get("by"), true
}

// IsTetherClient reports whether an MQTT username (Azure's shape,
// {host}/{deviceId}/?api-version=...&DeviceClientType=...) names Tether's
// device SDK.
func IsTetherClient(username string) bool {
	_, query, ok := strings.Cut(username, "?")
	if !ok {
		return false
	}
	q, err := url.ParseQuery(query)
	return err == nil && strings.HasPrefix(q.Get("DeviceClientType"), DeviceClientTypeTether)
}

// Takeovers is Tether's own part of a device's document (Azure's has
// none, and its clients ignore it): how often a newer connection with the
// device's identity took over an open session. Once after a lost link is
// routine (the device came back before the hub noticed the old link was
// dead); again and again means two agents share the device's key.
type Takeovers struct {
	LastHour int       `json:"lastHour"` // takeovers in the last hour
	Last     time.Time `json:"last"`     // the last one
	// The last takeover's two remote addresses: the connection it
	// replaced, and the one that replaced it.
	DisplacedRemote string `json:"displacedRemote"`
	ByRemote        string `json:"byRemote"`
}
