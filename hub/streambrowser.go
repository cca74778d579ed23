package hub

// A browser opening a stream (the web console's terminal) cannot set an
// Authorization header on a WebSocket: it offers its token as a
// subprotocol of its own instead (wire.SubprotocolBearerPrefix), beside
// the one it speaks. Only the one-request opening takes it: no other route
// is a WebSocket a browser opens.

import (
	"net/http"
	"strings"

	"github.com/tether-io/tether/wire"
)

// bearerFromProtocols returns r with the token of a bearer subprotocol
// as its Authorization, when it has none of its own, and with every
// bearer subprotocol taken out of Sec-WebSocket-Protocol, so that no later
// step (the relay's upgrade, its answer, a log) sees one. r itself is
// left as it was.
func bearerFromProtocols(r *http.Request) *http.Request {
	values := r.Header.Values("Sec-WebSocket-Protocol")
	var keep []string
	token, found := "", false
	for _, v := range values {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			if !strings.HasPrefix(p, wire.SubprotocolBearerPrefix) {
				if p != "" {
					keep = append(keep, p)
				}
				continue
			}
			if t, ok := wire.ParseBearerSubprotocol(p); ok && !found {
				token, found = t, true
			}
		}
	}
	if !found && len(keep) == countProtocols(values) {
		return r // nothing of a bearer's: the request as it came
	}
	r2 := r.Clone(r.Context())
	r2.Header.Del("Sec-WebSocket-Protocol")
	if len(keep) > 0 {
		r2.Header.Set("Sec-WebSocket-Protocol", strings.Join(keep, ", "))
	}
	if found && r2.Header.Get("Authorization") == "" {
		r2.Header.Set("Authorization", token)
	}
	return r2
}

// countProtocols counts the subprotocols listed in values.
func countProtocols(values []string) int {
	n := 0
	for _, v := range values {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) != "" {
				n++
			}
		}
	}
	return n
}
