package device

import (
	"crypto/tls"
	"testing"
)

func TestSetHubs(t *testing.T) {
	for _, tc := range []struct {
		tr       Transport
		hubs     []string
		base     *tls.Config
		addr     []string
		sni      []string
		wantFail bool
	}{
		{WebSocket, []string{"a.example:8443", " 127.0.0.3:9 ", "b.example"}, nil,
			[]string{"wss://a.example:8443/$iothub/websocket", "wss://127.0.0.3:9/$iothub/websocket", "wss://b.example:443/$iothub/websocket"},
			[]string{"a.example", "127.0.0.3", "b.example"}, false},
		{TLS, []string{"a.example", "[::1]:1883"}, nil,
			[]string{"a.example:8883", "[::1]:1883"}, []string{"a.example", "::1"}, false},
		{WebSocket, []string{"a.example:1"}, &tls.Config{ServerName: "fixed"},
			[]string{"wss://a.example:1/$iothub/websocket"}, []string{"fixed"}, false},
		{WebSocket, []string{" ", ""}, nil, nil, nil, true},
	} {
		c := &Client{transport: tc.tr, mqttTLS: &tls.Config{ServerName: "from-connstr"}}
		if tc.base != nil {
			c.mqttTLS.ServerName = tc.base.ServerName
		}
		err := c.setHubs(tc.hubs, tc.base)
		if (err != nil) != tc.wantFail {
			t.Fatalf("setHubs(%q): %v", tc.hubs, err)
		}
		if len(c.hubs) != len(tc.addr) {
			t.Fatalf("setHubs(%q): %d targets, want %d", tc.hubs, len(c.hubs), len(tc.addr))
		}
		for i, h := range c.hubs {
			if h.addr != tc.addr[i] || h.tls.ServerName != tc.sni[i] {
				t.Errorf("target %d = %s (SNI %s), want %s (SNI %s)", i, h.addr, h.tls.ServerName, tc.addr[i], tc.sni[i])
			}
		}
	}
}
