package wire

import (
	"encoding/base64"
	"strings"
)

// SubprotocolBearerPrefix begins a WebSocket subprotocol that carries a
// service's credentials where a browser cannot put an Authorization
// header: "tether.bearer." and the SAS token, base64url without padding.
// A browser offers it beside the subprotocol it speaks (SubprotocolStream)
// on Tether's one-request stream opening; the hub takes the token from it,
// never selects it, never logs it, and hands the rest of the offer on as
// if it had never been there. Kubernetes' API server does the same for
// its bearer tokens.
const SubprotocolBearerPrefix = "tether.bearer."

// BearerSubprotocol is the subprotocol that carries token.
func BearerSubprotocol(token string) string {
	return SubprotocolBearerPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))
}

// ParseBearerSubprotocol returns the token p carries, ok false when p is
// not a bearer subprotocol or its token is not base64url.
func ParseBearerSubprotocol(p string) (token string, ok bool) {
	enc, found := strings.CutPrefix(p, SubprotocolBearerPrefix)
	if !found {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
	if err != nil {
		return "", false
	}
	return string(b), true
}
