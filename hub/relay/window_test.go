package relay

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/yamux"
)

// sessionPair is a session stream between an end and the hub over TCP on
// loopback, as Tether's sessions carry them: the end's side and the
// hub's.
func sessionPair(t *testing.T) (end, hub *yamux.Stream) {
	t.Helper()
	endConn, hubConn := tcpPair(t)
	client, err := yamux.Client(endConn, muxconn.Config())
	if err != nil {
		t.Fatal(err)
	}
	server, err := yamux.Server(hubConn, muxconn.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	if end, err = client.OpenStream(); err != nil {
		t.Fatal(err)
	}
	if hub, err = server.AcceptStream(); err != nil {
		t.Fatal(err)
	}
	return end, hub
}

// TestStalledSessionStreamHoldsNothing: between two session streams, a
// device that stopped reading stops the service's writes once the two
// streams' windows are full, the relay holding no frame read from the
// service while the device's window is shut (before, a piece of up to
// 256 KiB waited in the relay on top of the windows). The relay then
// gives up at the write deadline as a blocked write would.
func TestStalledSessionStreamHoldsNothing(t *testing.T) {
	svcEnd, svcHub := sessionPair(t)
	devEnd, devHub := sessionPair(t)
	_ = devEnd // never read
	pp := &pipe{r: New(Options{})}
	none := bufio.NewReader(strings.NewReader(""))
	pp.peers[service] = newPeer(service, svcHub, none, time.Minute)
	pp.peers[device] = newPeer(device, devHub, none, time.Minute)
	done := make(chan int64)
	go func() {
		var wg sync.WaitGroup
		wg.Add(1)
		var n int64
		pp.serviceToDevice(&wg, &n)
		done <- n
	}()

	// The service writes frames as large as wsconn's until a write gets
	// nowhere for a second: the windows are full and nothing moves.
	payload := bytes.Repeat([]byte("x"), 256<<10-14)
	var frame bytes.Buffer
	ws.WriteFrame(&frame, ws.MaskFrame(ws.NewBinaryFrame(payload)))
	var written int
	for {
		svcEnd.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := svcEnd.Write(frame.Bytes())
		written += n
		if errors.Is(err, yamux.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Two windows, the service stream's at the hub and the device's at
	// the device, and what the relay's reader buffers (4 KiB), with a
	// little room for the frames' headers, which the relay changes.
	if most := 2*muxconn.Window + 8<<10; written > most {
		t.Errorf("the service got rid of %d bytes, more than the two windows and the relay's reader (%d): the relay holds %d",
			written, most, written-2*muxconn.Window)
	}

	// The relay's wait for the device's window ends at its deadline, here
	// made short, as a write blocked on it would.
	pp.peers[device].closing(0)
	select {
	case n := <-done:
		if n > muxconn.Window {
			t.Errorf("the relay delivered %d bytes to a device whose window is %d", n, muxconn.Window)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay still waits for the device's window")
	}
}
