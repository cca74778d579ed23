package e2e

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// sessionDevice serves a device's streams as an echo, rejecting "nope",
// and counts the requests that came on its data session (no URL to join)
// and over MQTT.
type sessionDevice struct {
	pushed, mqtt atomic.Int64
}

func (sd *sessionDevice) serve(t *testing.T, dc *device.Client) {
	go func() {
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			if req.URL == "" {
				sd.pushed.Add(1)
			} else {
				sd.mqtt.Add(1)
			}
			if req.StreamID == "" {
				t.Errorf("request %s without a stream id", req.RID)
			}
			go sd.answer(t, req)
		}
	}()
}

// answer rejects "nope" and echoes any other stream.
func (sd *sessionDevice) answer(t *testing.T, req *device.Request) {
	if req.Name == "nope" {
		if err := req.Reject(); err != nil {
			t.Errorf("Reject: %v", err)
		}
		return
	}
	if conn, err := req.Accept(context.Background()); err == nil {
		io.Copy(conn, conn)
		conn.Close()
	}
}

// echoOnSession opens a stream to device id, echoes 4 KiB through it and closes it.
func echoOnSession(ctx context.Context, svc *service.Client, id string) error {
	c, err := svc.OpenStream(ctx, id, "echo")
	if err != nil {
		return err
	}
	defer c.Close()
	return roundTrip(c, 4096)
}

// A Tether device opens its data session at its first stream, which
// comes over MQTT, and the hub pushes the next ones on it: 100 at once
// echo whole, and a rejection reaches the service with its status.
func TestDeviceSession(t *testing.T) {
	needSessions(t)
	t.Parallel()
	for _, tr := range []device.Transport{device.WebSocket, device.TLS} {
		t.Run(tr.String(), func(t *testing.T) {
			h := startHub(t, hubOptions{})
			sd := &sessionDevice{}
			sd.serve(t, h.connectDevice(t, h.addDevice(t, "dev1"), tr))
			svc := h.service(t)
			ctx := context.Background()

			if err := echoOnSession(ctx, svc, "dev1"); err != nil {
				t.Fatal(err)
			}
			if sd.mqtt.Load() != 1 || sd.pushed.Load() != 0 {
				t.Fatalf("the first stream came %d times over MQTT, %d on a session; want over MQTT", sd.mqtt.Load(), sd.pushed.Load())
			}
			// The session opens beside the first stream; until the hub
			// holds it, streams still come over MQTT.
			eventually(t, 20*time.Second, "a stream on the device's session", func() bool {
				if err := echoOnSession(ctx, svc, "dev1"); err != nil {
					t.Fatal(err)
				}
				return sd.pushed.Load() > 0
			})

			// The streams before are over at the hub too, so that 100 at
			// once stay within its cap of streams per device.
			eventually(t, 10*time.Second, "the earlier streams to end at the hub", func() bool {
				open, err := svc.Streams(ctx, "dev1")
				return err == nil && len(open) == 0
			})
			before := sd.mqtt.Load()
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := echoOnSession(ctx, svc, "dev1"); err != nil {
						t.Errorf("stream %d: %v", i, err)
					}
				}()
			}
			wg.Wait()
			if n := sd.mqtt.Load() - before; n != 0 {
				t.Errorf("%d of 100 streams came over MQTT while the session was open", n)
			}

			_, err := svc.OpenStream(ctx, "dev1", "nope")
			var re *service.RejectError
			if !errors.As(err, &re) || re.Status != wire.AnswerNotAllowed || !errors.Is(err, service.ErrNotAllowed) {
				t.Fatalf("OpenStream of a name the device rejects: %v, want a RejectError %d", err, wire.AnswerNotAllowed)
			}
			if err := echoOnSession(ctx, svc, "dev1"); err != nil {
				t.Fatal(err)
			}
			if sd.mqtt.Load() != before {
				t.Errorf("streams after the session opened came over MQTT")
			}
		})
	}
}

// With device.Options.NoSessions every stream comes over MQTT.
func TestDeviceNoSessions(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dc, err := device.Dial(ctx, h.addDevice(t, "dev1"), device.Options{TLSConfig: h.TLS, NoSessions: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	sd := &sessionDevice{}
	sd.serve(t, dc)
	svc := h.service(t)
	for range 5 {
		if err := echoOnSession(ctx, svc, "dev1"); err != nil {
			t.Fatal(err)
		}
	}
	if sd.pushed.Load() != 0 || sd.mqtt.Load() != 5 {
		t.Fatalf("%d streams on a session, %d over MQTT; want all 5 over MQTT", sd.pushed.Load(), sd.mqtt.Load())
	}
}

// An X.509 device opens its session with its certificate, as its MQTT
// connection.
func TestDeviceSessionX509(t *testing.T) {
	needSessions(t)
	t.Parallel()
	h := startHub(t, hubOptions{})
	svc := h.service(t)
	ctx := context.Background()
	cert := validCert(t, "cam1", nil)
	d, err := svc.CreateDeviceX509(ctx, "cam1", fingerprint(cert))
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []device.Transport{device.WebSocket, device.TLS} {
		t.Run(tr.String(), func(t *testing.T) {
			dc, err := h.dialX509(t, svc.DeviceConnectionString(d), &cert, tr)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer dc.Close()
			sd := &sessionDevice{}
			sd.serve(t, dc)
			eventually(t, 20*time.Second, "a stream on the device's session", func() bool {
				if err := echoOnSession(ctx, svc, "cam1"); err != nil {
					t.Fatal(err)
				}
				return sd.pushed.Load() > 0
			})
		})
	}
}
