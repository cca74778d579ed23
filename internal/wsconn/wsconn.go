// Package wsconn is the client side of a stream on the streaming endpoint:
// it dials a wss:// bridge URL with a bearer token and presents the
// WebSocket as a net.Conn. The device and service SDKs share it.
package wsconn

import (
	"context"
	"crypto/tls"
	"net"
)

// Dial opens url (wss://host:port/bridges/...) with
// "Authorization: Bearer token" and returns the stream as a net.Conn.
func Dial(ctx context.Context, url, token string, tlsConf *tls.Config) (net.Conn, error) {
	panic("not yet")
}
