// Package wstest reads WebSocket frames for code that plays a raw client
// or server against the hub: tests, and the benchmark's simulated
// services. It bounds the payload a peer may declare, which gobwas/ws's
// ReadFrame does not (a peer could make the reader hold whatever it
// announces), and leaves the payload as it came, masked or not, as
// ReadFrame did.
package wstest

import (
	"fmt"
	"io"

	"github.com/gobwas/ws"
)

// ReadFrame reads one frame from r. A frame that declares a payload longer
// than limit is an error, returned with its header and before any of its
// payload is read.
func ReadFrame(r io.Reader, limit int64) (ws.Frame, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	f := ws.Frame{Header: h}
	if h.Length > limit {
		return f, fmt.Errorf("websocket frame of %d bytes, more than %d", h.Length, limit)
	}
	if h.Length > 0 {
		f.Payload = make([]byte, h.Length)
		if _, err := io.ReadFull(r, f.Payload); err != nil {
			return f, err
		}
	}
	return f, nil
}
