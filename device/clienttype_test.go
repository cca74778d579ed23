package device

import (
	"net/url"

	"github.com/tether-io/tether/internal/version"
)

// wantClientType is the DeviceClientType of the username, escaped: Tether's
// prefix, which the hub tells the SDK by, then this build's version.
var wantClientType = "tether-go%2F" + url.QueryEscape(version.Get().Version)
