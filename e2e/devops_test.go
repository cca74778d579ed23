package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// dialQuick connects a device that retries fast, so tests of refusal and
// recovery do not wait out production backoff.
func (h *testHub) dialQuick(t *testing.T, connStr string) (*device.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := device.Dial(ctx, connStr, devOptions(device.Options{
		TLSConfig: h.TLS, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: testLogger(t),
	}))
	if err == nil {
		t.Cleanup(func() { dc.Close() })
	}
	return dc, err
}

func TestDisableEnable(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	devStr := h.addDevice(t, "dev1")
	dc, err := h.dialQuick(t, devStr)
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, dc)
	svc := h.service(t)
	ctx := context.Background()

	open, err := svc.OpenStream(ctx, "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	echoOnce(t, open, "before")

	d, err := svc.SetDeviceStatus(ctx, "dev1", false)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != wire.StatusDisabled {
		t.Fatalf("status %q after disable", d.Status)
	}
	// Its open stream ends.
	open.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := open.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("open stream after disable: %v", err)
	}
	// It is disconnected and cannot come back.
	eventually(t, 10*time.Second, "the device to be disconnected", func() bool { return !dc.Connected() })
	if _, err := h.dialQuick(t, devStr); !errors.Is(err, device.ErrUnauthorized) {
		t.Fatalf("a disabled device connecting: %v", err)
	}
	// Its stream requests fail, saying why.
	_, err = svc.OpenStream(ctx, "dev1", "echo")
	var ae *service.APIError
	if !errors.Is(err, service.ErrDeviceOffline) || !errors.As(err, &ae) || !strings.Contains(ae.Message, "disabled") {
		t.Fatalf("stream to a disabled device: %v", err)
	}

	// Enabled again, the same client comes back on its own.
	if _, err := svc.SetDeviceStatus(ctx, "dev1", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the device to reconnect", dc.Connected)
	var conn net.Conn
	eventually(t, 10*time.Second, "a stream after enable", func() bool {
		c, err := svc.OpenStream(ctx, "dev1", "echo")
		if err != nil {
			return false
		}
		conn = c
		return true
	})
	echoOnce(t, conn, "after")
	conn.Close()
}

func TestRotateKey(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	oldStr := h.addDevice(t, "dev1")
	dc, err := h.dialQuick(t, oldStr)
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, dc)
	svc := h.service(t)
	ctx := context.Background()
	before, _ := svc.GetDevice(ctx, "dev1")

	d, err := svc.RotateKey(ctx, "dev1", false)
	if err != nil {
		t.Fatal(err)
	}
	k := d.Authentication.SymmetricKey
	if k.PrimaryKey == before.Authentication.SymmetricKey.PrimaryKey || k.SecondaryKey != before.Authentication.SymmetricKey.SecondaryKey {
		t.Fatal("rotate-key changed the wrong key")
	}
	// The old key stops working for new connections...
	if _, err := h.dialQuick(t, oldStr); !errors.Is(err, device.ErrUnauthorized) {
		t.Fatalf("old primary key: %v", err)
	}
	// ...the connection made with it ends (a leaked key's holder is cut
	// off, not only kept from coming back)...
	eventually(t, 5*time.Second, "the connection made with the old key to end", func() bool { return !dc.Connected() })
	if _, err := svc.OpenStream(ctx, "dev1", "echo"); !errors.Is(err, service.ErrDeviceOffline) {
		t.Fatalf("stream after the rotation to the device on its old key: %v, want offline", err)
	}
	// ...and the new key works.
	newStr := svc.DeviceConnectionString(d)
	dc.Close()
	if _, err := h.dialQuick(t, newStr); err != nil {
		t.Fatalf("new primary key: %v", err)
	}

	// The secondary key rotates on its own; the primary keeps working.
	cs, _ := sas.ParseConnectionString(newStr)
	cs.SharedAccessKey = k.SecondaryKey
	oldSecondary := cs.String()
	if _, err := h.dialQuick(t, oldSecondary); err != nil {
		t.Fatalf("secondary key before its rotation: %v", err)
	}
	d2, err := svc.RotateKey(ctx, "dev1", true)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Authentication.SymmetricKey.PrimaryKey != k.PrimaryKey {
		t.Fatal("rotating the secondary key changed the primary")
	}
	if _, err := h.dialQuick(t, oldSecondary); !errors.Is(err, device.ErrUnauthorized) {
		t.Fatalf("old secondary key: %v", err)
	}
}
