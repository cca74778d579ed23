package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/device/devicetest"
)

// With --hubs, the agent's refusal names the node it dialed, never the
// connection string's HostName it did not dial, and the name the token was
// signed for, which that node must go by.
func TestAgentRefusedByHubOfHubs(t *testing.T) {
	key := devicetest.NewKey()
	hub := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	// The test hub takes tokens for 127.0.0.1 only.
	_, port, err := net.SplitHostPort(hub.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	signedFor := "localhost:" + port
	dead := deadAddr(t)
	stderr, err := runAgent(t, "--allow", "ssh=127.0.0.1:22", "--ca", caFile(t),
		"--device", "HostName="+signedFor+";DeviceId="+devicetest.DeviceID+";SharedAccessKey="+key,
		"--hubs", dead+","+hub.HTTPAddr)
	if !errors.Is(err, device.ErrUnauthorized) {
		t.Fatalf("err = %v, want device.ErrUnauthorized", err)
	}
	msg := err.Error()
	if want := "the hub at wss://" + hub.HTTPAddr + "/$iothub/websocket refused"; !strings.Contains(msg, want) {
		t.Errorf("the error does not say %q:\n%s", want, msg)
	}
	if strings.Contains(msg, "the hub at "+signedFor) {
		t.Errorf("the error names the connection string's HostName, which the agent did not dial:\n%s", msg)
	}
	if want := fmt.Sprintf("signed for %q", signedFor); !strings.Contains(msg, want) {
		t.Errorf("the error does not say %s:\n%s", want, msg)
	}
	if strings.Contains(msg+stderr, key) {
		t.Error("the key leaked")
	}
}
