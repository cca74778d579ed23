package device

import (
	"github.com/tether-io/tether/internal/version"
	"github.com/tether-io/tether/wire"
)

// clientType goes in the MQTT username, as the Azure SDKs name themselves
// (azure-iot-device/1.18.0): the hub tells a client so named why it was
// taken over, and shows the whole of it, this SDK's version, in the
// device's document (deviceClientType).
var clientType = wire.DeviceClientTypeTether + version.Get().Version
