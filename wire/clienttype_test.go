package wire

import (
	"strings"
	"testing"
)

func TestClientType(t *testing.T) {
	for _, tc := range []struct{ username, want string }{
		{"hub.example/dev1/?api-version=2020-09-30&DeviceClientType=tether-go%2F0.3.0", "tether-go/0.3.0"},
		{"hub.example/dev1/mod/?api-version=2020-09-30&DeviceClientType=tether-go/0.3.0%2Bdirty", "tether-go/0.3.0+dirty"},
		{"hub.example/dev1/?api-version=2019-05-30-preview&DeviceClientType=iothubclient%2f1.3.0-public-preview%20(native%3b%20Linux%3b%20x86_64)",
			"iothubclient/1.3.0-public-preview (native; Linux; x86_64)"},
		{"hub.example/dev1/?api-version=2020-09-30", ""},
		{"hub.example/dev1/", ""},
		{"hub.example/dev1/?DeviceClientType=%zz", ""}, // not a query
		{"hub.example/dev1/?DeviceClientType=evil%1b%5b2J%0a%c3%a9", "evil?[2J???"},
		{"h/d/?DeviceClientType=" + strings.Repeat("x", 1000), strings.Repeat("x", MaxClientType)},
	} {
		if got := ClientType(tc.username); got != tc.want {
			t.Errorf("ClientType(%.80q) = %q, want %q", tc.username, got, tc.want)
		}
	}
}
