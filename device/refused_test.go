package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/tether-io/tether/device/devicetest"
)

// A hub of Options.Hubs that refuses the device is named by the address
// dialed, not by the connection string's HostName, and the error says
// which name the token was signed for: a hub that does not go by it
// refuses the token as it would a wrong key, and MQTT gives no reason.
func TestRefusalNamesHubDialed(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		key := devicetest.NewKey()
		b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
		opts, _ := testOptions(t, b, tr)
		dialed := b.TLSAddr
		if tr == WebSocket {
			dialed = "wss://" + b.HTTPAddr + "/$iothub/websocket"
		}
		// The test hub takes tokens for 127.0.0.1 only: one signed for
		// localhost names another resource.
		_, port, err := net.SplitHostPort(b.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		signedFor := "localhost:" + port
		opts.Hubs = []string{b.HTTPAddr}
		if tr == TLS {
			opts.Hubs = []string{b.TLSAddr}
		}
		ctx, cancel := context.WithTimeout(context.Background(), devicetest.Timeout)
		defer cancel()
		_, err = Dial(ctx, "HostName="+signedFor+";DeviceId="+devicetest.DeviceID+";SharedAccessKey="+key, opts)
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("err = %v, want ErrUnauthorized", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "the hub at "+dialed+" refused") {
			t.Errorf("the error does not name the hub dialed, %s:\n%s", dialed, msg)
		}
		if strings.Contains(msg, "the hub at "+signedFor) {
			t.Errorf("the error names the connection string's HostName as the hub that refused:\n%s", msg)
		}
		if want := fmt.Sprintf("signed for %q", signedFor); !strings.Contains(msg, want) {
			t.Errorf("the error does not say %s:\n%s", want, msg)
		}
		if strings.Contains(msg, key) {
			t.Error("the key leaked into the error")
		}
	})
}
