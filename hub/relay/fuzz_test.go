package relay

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tether-io/tether/wire"
)

// FuzzBearer feeds the streaming endpoint's parsers untrusted text: the
// Authorization header, Sec-WebSocket-Protocol, and the bridge path.
func FuzzBearer(f *testing.F) {
	for _, s := range []string{
		"Bearer abc", "bearer  abc ", "Bearer", "Bearer ", "Basic abc", " Bearer\tabc", "",
		"tether-stream.v1", "MQTT, tether-stream.v1", "tether-stream.v1 ,x",
		"/bridges/hub/dev1/ssh/ID", "/bridges/hub/dev%2F1/ssh/ID", "/bridges/h/d/s/i/x", "/bridges/%zz/d/s/i",
		"/bridges/h/d/a%2541/i", // a name holding "%": found by thinking, kept as a regression
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if tok, ok := bearer(v); ok {
			if tok == "" || strings.TrimSpace(tok) != tok {
				t.Fatalf("bearer(%q) = %q", v, tok)
			}
			// What a client sends for that token means that token.
			if again, ok := bearer("Bearer " + tok); !ok || again != tok {
				t.Fatalf("bearer(Bearer %q) = %q, %v", tok, again, ok)
			}
		}

		_ = offers(http.Header{"Sec-WebSocket-Protocol": {v}}, Subprotocol)

		hub, dev, name, id, err := wire.ParseBridgePath(v)
		if err != nil {
			return
		}
		if hub == "" || dev == "" || name == "" || id == "" {
			t.Fatalf("ParseBridgePath(%q) gave an empty part", v)
		}
		// The relay compares these parts to the stream's own: a stream's
		// path must parse back to them, whatever its device ID and name.
		p := wire.BridgePath(hub, dev, name, id)
		h2, d2, n2, i2, err := wire.ParseBridgePath(p)
		if strings.ContainsAny(name+id, "/") {
			return // not a name or id the hub hands out
		}
		if err != nil || h2 != hub || d2 != dev || n2 != name || i2 != id {
			t.Fatalf("BridgePath(%q, %q, %q, %q) = %q parses as %q %q %q %q (%v)", hub, dev, name, id, p, h2, d2, n2, i2, err)
		}
	})
}
