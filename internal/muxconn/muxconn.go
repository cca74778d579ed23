// Package muxconn opens the session of one of Tether's own ends (a
// service or a device) with the hub: a WebSocket on which a yamux session
// carries many streams (wire.SubprotocolMux, docs/protocol.md). The end is
// yamux's client; the hub, its server.
package muxconn

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"time"

	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/internal/yamux"
)

// Window is the receive window of every session stream, at both ends and
// at the hub: what one stalled stream may hold in each process.
const Window = 256 << 10

// MaxWindow is the most a session stream's receive window grows to while
// its reader keeps up with a sender the window holds back (yamux's
// receive-window auto-tuning): 16 MiB covers 1 Gbit/s at 130 ms. A
// stream stalled from its start holds Window; one that stalls after it
// grew holds the window it had, at most this.
const MaxWindow = 16 << 20

// MaxSessionGrowth bounds by how much the windows of one session's
// streams grow past Window in all: four streams at MaxWindow. Without it
// a peer could make a thousand streams fast and then stall them, each
// holding 16 MiB here; with it they hold Window each and 64 MiB more.
const MaxSessionGrowth = 64 << 20

// Config is the yamux configuration every session uses, Tether's ends and
// the hub alike, so that the two sides agree on windows and keep-alives.
func Config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = Window
	c.StreamWindowGrowthLimit = MaxWindow
	c.SessionWindowGrowthLimit = MaxSessionGrowth
	c.AcceptBacklog = 1024
	// The hub's idle limit for a session (90 s) is longer than the ends'
	// keep-alive, so a quiet session is never mistaken for a dead one.
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 30 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 5 * time.Minute
	c.LogOutput = io.Discard
	return c
}

// ErrNoSession says the hub has no sessions: use streams of their own.
var ErrNoSession = wsconn.ErrNoSession

// Dial opens a session to url (wss://host:port + wire.PathMuxService or
// wire.MuxDevicePath) with header (the end's credentials). A hub without
// sessions gives ErrNoSession.
func Dial(ctx context.Context, url string, header http.Header, tlsConf *tls.Config) (*yamux.Session, error) {
	c, err := wsconn.DialSession(ctx, url, header, tlsConf)
	if err != nil {
		return nil, err
	}
	s, err := yamux.Client(c, Config())
	if err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}
