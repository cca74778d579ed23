package main

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/device/devicetest"
)

// TestForwardWaitsForHub: a forwarder started before its hub says why it
// waits, prints "forwarding" only once the hub has checked the device, and
// serves a connection that arrived while it waited.
func TestForwardWaitsForHub(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t.Setenv("TETHER_HUB", "")
	t.Setenv("TETHER_CA", "")
	caFile := newTestHub(t).caFile // the same CA as the hub started below
	hubAddr, listen := devicetest.FreeAddr(t), devicetest.FreeAddr(t)
	connStr := "HostName=" + hubAddr + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + testPolicyKey
	stderr := newLockedBuffer()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"forward", "dev1", "echo", "--listen", listen, "--hub", connStr, "--ca", caFile}, io.Discard, stderr)
	}()
	stderr.waitFor(t, "cannot reach the hub yet; retrying")
	stderr.waitFor(t, "hub unreachable at "+hubAddr)
	if strings.Contains(stderr.String(), "forwarding") {
		t.Fatalf("forwarding before the hub answered:\n%s", stderr)
	}
	early, err := net.Dial("tcp", listen) // waits in the listener's queue
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()

	h := newTestHubAt(t, hubAddr)
	h.mu.Lock()
	h.devices["dev1"], h.accept = true, true
	h.mu.Unlock()
	stderr.waitFor(t, "forwarding "+listen+" → dev1/echo")
	early.SetDeadline(time.Now().Add(10 * time.Second))
	go early.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(early, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo through the early connection: %q, %v", buf, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("forward returned %v", err)
	}
}
