package wire

import (
	"net/url"
	"strings"
)

// MaxClientType bounds the DeviceClientType the hub keeps of a device: the
// device chooses it, and it is stored with the device's connection state.
const MaxClientType = 128

// ClientType is the DeviceClientType an MQTT username (Azure's shape,
// {host}/{deviceId}/?api-version=...&DeviceClientType=...) names, such as
// "tether-go/0.3.0" or "azure-iot-device/1.18.0"; "" when it names none.
// The device chooses it and operators read it in a terminal, so it is cut
// to MaxClientType bytes and every byte that is not printable ASCII
// becomes '?': no terminal escape, no invalid JSON string.
func ClientType(username string) string {
	_, query, ok := strings.Cut(username, "?")
	if !ok {
		return ""
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return ""
	}
	t := q.Get("DeviceClientType")
	if len(t) > MaxClientType {
		t = t[:MaxClientType]
	}
	b := []byte(t)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
