package e2e

import (
	"context"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
)

// halfConn is what the SDKs' stream conns offer beyond net.Conn.
type halfConn interface {
	net.Conn
	CloseWrite() error
	Done() <-chan struct{}
}

// TestHalfCloseSDK: the service sends 1 MiB and half-closes; the device
// reads to EOF and only then answers with the SHA-256 of what it read; the
// service reads the answer whole, then EOF. The device ends its side by
// closing, or by half-closing too, after which the hub ends the stream.
func TestHalfCloseSDK(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	svc := h.service(t)
	for _, devEnd := range []string{"close", "closewrite"} {
		t.Run("device "+devEnd, func(t *testing.T) {
			devErr := make(chan error, 1)
			go func() {
				devErr <- func() error {
					req, err := dc.Accept(context.Background())
					if err != nil {
						return err
					}
					c, err := req.Accept(context.Background())
					if err != nil {
						return err
					}
					defer c.Close()
					sum := sha256.New()
					if _, err := io.Copy(sum, c); err != nil { // to the service's EOF
						return err
					}
					if _, err := c.Write(sum.Sum(nil)); err != nil {
						return err
					}
					if devEnd == "close" {
						return nil
					}
					hc := c.(halfConn)
					if err := hc.CloseWrite(); err != nil {
						return err
					}
					// Both sides have sent their EOF: the hub ends the stream.
					select {
					case <-hc.Done():
					case <-time.After(10 * time.Second):
						t.Error("device: stream not ended after both half-closes")
					}
					return nil
				}()
			}()

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, err := svc.OpenStream(ctx, "dev1", "hash")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			hc, ok := conn.(halfConn)
			if !ok {
				t.Fatalf("service stream %T cannot half-close", conn)
			}
			data := randomBytes(t, 1<<20)
			if _, err := hc.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := hc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if _, err := hc.Write([]byte("x")); err == nil {
				t.Error("Write after CloseWrite succeeded")
			}
			answer, err := io.ReadAll(hc)
			if err != nil {
				t.Fatalf("service read: %v", err)
			}
			if want := sha256.Sum256(data); string(answer) != string(want[:]) {
				t.Fatalf("answer %x, want %x", answer, want)
			}
			if err := <-devErr; err != nil {
				t.Fatalf("device: %v", err)
			}
			select {
			case <-hc.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("service: stream not ended")
			}
		})
	}
}
