package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/device/devicetest"
	"github.com/tether-io/tether/wire"
)

// startAgent runs "tether agent args..." until the test cancels ctx; done
// receives what it returned.
func startAgent(t *testing.T, ctx context.Context, args ...string) (stderr *lockedBuffer, done chan error) {
	t.Helper()
	t.Setenv("TETHER_HUB", "")
	t.Setenv("TETHER_CA", "")
	t.Setenv("TETHER_DEVICE", "")
	stderr = newLockedBuffer()
	done = make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"agent"}, args...), io.Discard, stderr) }()
	return stderr, done
}

// runAgent runs an agent that is expected to fail at start.
func runAgent(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), devicetest.Timeout)
	defer cancel()
	stderr, done := startAgent(t, ctx, args...)
	select {
	case err := <-done:
		return stderr.String(), err
	case <-ctx.Done():
		t.Fatalf("agent %q did not fail at start; stderr:\n%s", args, stderr)
		return "", nil
	}
}

func caFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, devicetest.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// echoTarget is a TCP service that echoes until its client half-closes.
func echoTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestAgentUsageErrors(t *testing.T) {
	key := devicetest.NewKey()
	cs := "HostName=127.0.0.1:1;DeviceId=dev1;SharedAccessKey=" + key
	for _, tc := range []struct {
		args []string
		want string // in the error, or on stderr for errUsage
	}{
		{[]string{"--allow", "ssh=127.0.0.1:22"}, "--device"},
		{[]string{"--device", cs}, "--allow"},
		{[]string{"--device", cs, "--allow", "ssh"}, "not NAME=HOST:PORT"},
		{[]string{"--device", cs, "--allow", "ssh=127.0.0.1"}, "not HOST:PORT"},
		{[]string{"--device", cs, "--allow", "a/b=127.0.0.1:22"}, "may not hold"},
		{[]string{"--device", cs, "--allow", "ssh=127.0.0.1:22", "--allow", "ssh=127.0.0.1:23"}, "allowed twice"},
		{[]string{"--device", cs, "--allow", "ssh=127.0.0.1:22", "--transport", "udp"}, "want ws or tls"},
		{[]string{"--device", cs, "--allow", "ssh=127.0.0.1:22", "--mqtt-addr", "127.0.0.1:8883"}, "--transport tls"},
		{[]string{"--device", cs, "--allow", "ssh=127.0.0.1:22", "--log-format", "xml"}, "want text or json"},
		{[]string{"--device", cs, "--allow", "ssh=127.0.0.1:22", "extra"}, "takes no arguments"},
		{[]string{"--device", "HostName=h;SharedAccessKey=" + key, "--allow", "ssh=127.0.0.1:22"}, "bad connection string"},
		{[]string{"--device", "HostName=h;SharedAccessKeyName=service;SharedAccessKey=" + key, "--allow", "ssh=127.0.0.1:22"}, "DeviceId"},
	} {
		stderr, err := runAgent(t, tc.args...)
		if err == nil {
			t.Errorf("agent %q succeeded", tc.args)
			continue
		}
		msg := err.Error()
		if errors.Is(err, errUsage) {
			msg = stderr
		}
		if !strings.Contains(msg, tc.want) {
			t.Errorf("agent %q: %q does not say %q", tc.args, msg, tc.want)
		}
		if strings.Contains(err.Error()+stderr, key) {
			t.Errorf("agent %q printed the key", tc.args)
		}
	}
}

func TestAgentDeviceFromEnvironment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), devicetest.Timeout)
	defer cancel()
	dead := deadAddr(t)
	t.Setenv("TETHER_DEVICE", "HostName="+dead+";DeviceId=dev1;SharedAccessKey="+devicetest.NewKey())
	stderr := newLockedBuffer()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"agent", "--allow", "ssh=127.0.0.1:22"}, io.Discard, stderr) }()
	stderr.waitFor(t, "cannot reach the hub at wss://"+dead)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent stopped while waiting for the hub from TETHER_DEVICE: %v", err)
	}
}

func TestAgentStartErrors(t *testing.T) {
	key := devicetest.NewKey()
	hub := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	allow := []string{"--allow", "ssh=127.0.0.1:22"}

	// An unreachable hub is no refusal: the agent says why it waits and
	// connects once the hub is up.
	t.Run("unreachable, then up", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), devicetest.Timeout)
		defer cancel()
		dead := deadAddr(t)
		stderr, done := startAgent(t, ctx, append(allow, "--ca", caFile(t), "--device", "HostName="+dead+";DeviceId="+devicetest.DeviceID+";SharedAccessKey="+key)...)
		stderr.waitFor(t, "cannot reach the hub at wss://"+dead)
		stderr.waitFor(t, "retrying")
		later := devicetest.StartHub(t, key, "127.0.0.1:0", dead)
		later.NextConnect()
		stderr.waitFor(t, "agent running")
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("agent returned %v", err)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		_, err := runAgent(t, append(allow, "--device", hub.ConnStr(key))...)
		if err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), "--ca") {
			t.Fatalf("err = %v, want one about the certificate and --ca", err)
		}
	})
	t.Run("unauthorized", func(t *testing.T) {
		wrong := devicetest.NewKey()
		stderr, err := runAgent(t, append(allow, "--ca", caFile(t), "--device", hub.ConnStr(wrong))...)
		if !errors.Is(err, device.ErrUnauthorized) {
			t.Fatalf("err = %v, want device.ErrUnauthorized", err)
		}
		if strings.Contains(err.Error()+stderr, wrong) {
			t.Error("the key leaked")
		}
	})
}

func TestAgentStreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra func(hub *devicetest.Hub) []string
	}{
		{"ws", func(*devicetest.Hub) []string { return nil }},
		{"tls", func(h *devicetest.Hub) []string {
			return []string{"--transport", "tls", "--mqtt-addr", h.TLSAddr, "--log-format", "json"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Registered first, so it runs after the servers have stopped.
			before := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, before) })
			key := devicetest.NewKey()
			hub := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
			const token = "c2VydmljZS1zaWRlLXRva2Vu"
			bridge := devicetest.StartBridge(t, token, false)
			target := echoTarget(t)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			args := append([]string{
				"--ca", caFile(t), "--device", hub.ConnStr(key),
				"--allow", "echo=" + target, "--allow", "dead=" + deadAddr(t),
			}, tc.extra(hub)...)
			stderr, done := startAgent(t, ctx, args...)
			stderr.waitFor(t, "agent running")

			request := func(name, rid string) {
				url := "wss://" + bridge.Addr + wire.BridgePath("hub", devicetest.DeviceID, name, rid)
				hub.SendRequest(wire.StreamRequest{Name: name, RID: rid, URL: url, Token: token}.Topic())
			}

			// A name not in --allow is rejected as not allowed.
			request("nope", "r1")
			if got := hub.NextAnswer(); got != wire.ResponseTopic(wire.AnswerNotAllowed, "r1") {
				t.Fatalf("answer = %q, want 400 for r1", got)
			}
			stderr.waitFor(t, "not in --allow")

			// A target that refuses is rejected as such, and logged with
			// the reason.
			request("dead", "r2")
			if got := hub.NextAnswer(); got != wire.ResponseTopic(wire.AnswerTargetRefused, "r2") {
				t.Fatalf("answer = %q, want 503 for r2", got)
			}
			stderr.waitFor(t, "cannot connect to its target")

			// An allowed stream relays both ways; the service closing it
			// ends it on the device too.
			request("echo", "r3")
			if got := hub.NextAnswer(); got != wire.ResponseTopic(200, "r3") {
				t.Fatalf("answer = %q, want 200 for r3", got)
			}
			svc := bridge.NextConn(t)
			for _, msg := range []string{"ping", strings.Repeat("x", 100_000)} {
				if err := svc.Send([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				var got []byte
				for len(got) < len(msg) {
					b, err := svc.Recv()
					if err != nil {
						t.Fatalf("recv after %d bytes: %v", len(got), err)
					}
					got = append(got, b...)
				}
				if string(got) != msg {
					t.Fatalf("echo of %d bytes came back as %d bytes", len(msg), len(got))
				}
			}
			svc.Close()
			stderr.waitFor(t, "stream closed")

			// A stream still open when the agent stops is ended, and the
			// agent returns nil.
			request("echo", "r4")
			if got := hub.NextAnswer(); got != wire.ResponseTopic(200, "r4") {
				t.Fatalf("answer = %q, want 200 for r4", got)
			}
			svc = bridge.NextConn(t)
			if err := svc.Send([]byte("still here")); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Recv(); err != nil {
				t.Fatal(err)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("agent returned %v after SIGINT", err)
				}
			case <-time.After(devicetest.Timeout):
				t.Fatal("agent did not stop")
			}
			if _, err := svc.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("the open stream was not ended: %v", err)
			}
			svc.Close()

			out := stderr.String()
			t.Logf("agent log:\n%s", out)
			if strings.Contains(out, key) || strings.Contains(out, token) || strings.Contains(out, "sig=") {
				t.Errorf("the log holds a key or token:\n%s", out)
			}
			if tc.name == "tls" {
				for line := range strings.Lines(out) {
					if !json.Valid([]byte(line)) {
						t.Errorf("--log-format json wrote a non-JSON line: %q", line)
					}
				}
			}
		})
	}
}

func TestRelayNamedLabelsDirections(t *testing.T) {
	user, local := tcpPair(t)
	stream, peer := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), local, stream, "up", "down") }()
	peer.Write([]byte("x")) // reaches user
	buf := make([]byte, 1)
	if _, err := io.ReadFull(user, buf); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	if err := <-done; err != nil {
		t.Fatalf("a clean end reported %v", err)
	}
	user.Close()
}
