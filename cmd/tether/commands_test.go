package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"

	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

const (
	testPolicyKey = "c2VydmljZS1rZXktZm9yLXRlc3RzLTAxMjM0NTY3ODk="
	testDevKey    = "ZGV2aWNlLWtleS1wcmltYXJ5LTAxMjM0NTY3ODlhYmM="
)

// lockedBuffer is a stderr that commands may write from several
// goroutines; notify gets a signal after every write so tests wait on
// output instead of sleeping.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	notify chan struct{}
}

func newLockedBuffer() *lockedBuffer { return &lockedBuffer{notify: make(chan struct{}, 1)} }

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.b.Write(p)
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return n, err
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor blocks until the output holds s.
func (l *lockedBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(l.String(), s) {
		select {
		case <-l.notify:
		case <-timeout:
			t.Fatalf("output never held %q; it is:\n%s", s, l.String())
		}
	}
}

// testHub is a fake hub answering in Azure's shapes, enough to drive the
// commands; the real hub is exercised by the end-to-end tests.
type testHub struct {
	srv     *httptest.Server
	connStr string
	caFile  string

	mu      sync.Mutex
	devices map[string]bool
	offline bool
	// registryDenied plays a policy with ServiceConnect alone.
	registryDenied bool
	// accept makes the device accept streams, served by an echoing
	// streaming endpoint.
	accept bool
}

func newTestHub(t *testing.T) *testHub { return newTestHubAt(t, "") }

// newTestHubAt is newTestHub listening on addr, "" for any port. Its CA
// file is the same for every test hub: httptest has one certificate.
func newTestHubAt(t *testing.T, addr string) *testHub {
	t.Helper()
	h := &testHub{devices: map[string]bool{}}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(h.serve))
	h.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		h.srv.Listener.Close()
		h.srv.Listener = ln
	}
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	h.connStr = "HostName=" + h.srv.Listener.Addr().String() + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + testPolicyKey
	h.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw})
	if err := os.WriteFile(h.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *testHub) host() string { return h.srv.Listener.Addr().String() }

func azureErr(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set(wire.HeaderErrorCode, wire.CodeName(code))
	w.WriteHeader(status)
	w.Write(wire.EncodeError(code, msg))
}

func (h *testHub) device(id string) wire.Device {
	return wire.Device{DeviceID: id, Status: "enabled", ConnectionState: "Disconnected", ETag: "MA==",
		Authentication: wire.Authentication{Type: "sas", SymmetricKey: &wire.SymmetricKey{PrimaryKey: testDevKey, SecondaryKey: testDevKey}}}
}

func (h *testHub) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, wire.PathBridges) {
		echoStream(w, r)
		return
	}
	tok, err := sas.ParseToken(r.Header.Get("Authorization"))
	if err != nil || tok.Verify(testPolicyKey, time.Now()) != nil {
		azureErr(w, 401, wire.CodeUnauthorized, "Unauthorized")
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.registryDenied && (r.URL.Path == "/devices" || strings.HasPrefix(r.URL.Path, "/devices/")) {
		azureErr(w, 401, wire.CodeUnauthorized, "Unauthorized")
		return
	}
	id := strings.TrimPrefix(r.URL.Path, "/devices/")
	switch {
	case r.URL.Path == "/devicestreams":
		json.NewEncoder(w).Encode(wire.Endpoints{StreamingEndpoints: []string{"https://" + h.host(), "https://other:8443"}})
	case r.URL.Path == "/devices" && r.Method == "GET":
		list := []wire.Device{}
		for id := range h.devices {
			list = append(list, h.device(id))
		}
		json.NewEncoder(w).Encode(list)
	case strings.HasPrefix(r.URL.Path, "/twins/"):
		if h.offline {
			azureErr(w, 404, wire.CodeNotOnline, "Device is not online")
			return
		}
		if !h.accept {
			w.Header().Set(wire.HeaderIsAccepted, "False")
			return
		}
		w.Header().Set(wire.HeaderIsAccepted, "True")
		w.Header().Set(wire.HeaderURL, "wss://"+h.host()+"/bridges/hub/dev1/echo/1")
		w.Header().Set(wire.HeaderAuthToken, "stream-token")
	case r.Method == "PUT":
		if h.devices[id] {
			azureErr(w, 409, wire.CodeConflict, "Device already exists")
			return
		}
		h.devices[id] = true
		json.NewEncoder(w).Encode(h.device(id))
	case !h.devices[id]:
		azureErr(w, 404, wire.CodeDeviceNotFound, "Device not registered")
	case r.Method == "GET":
		json.NewEncoder(w).Encode(h.device(id))
	case r.Method == "DELETE":
		delete(h.devices, id)
		w.WriteHeader(http.StatusNoContent)
	}
}

// echoStream plays the device side of a stream: it echoes every message,
// and ends the stream after echoing "bye" with a close frame 1000, as the
// hub passes on a device's clean end.
func echoStream(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer stream-token" {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	go func() {
		defer conn.Close()
		for {
			msg, op, err := wsutil.ReadClientData(conn)
			if err != nil {
				return
			}
			if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
				return
			}
			if string(msg) == "bye" {
				ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
				return
			}
		}
	}()
}

// tether runs the CLI as main does, without the environment.
func tether(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	t.Setenv("TETHER_HUB", "")
	t.Setenv("TETHER_CA", "")
	var out bytes.Buffer
	errb := newLockedBuffer()
	err = run(ctx, args, &out, errb)
	return out.String(), errb.String(), err
}

func TestMissingHub(t *testing.T) {
	for _, args := range [][]string{
		{"devices", "list"},
		{"devices", "add", "x"},
		{"endpoints"},
		{"forward", "dev1", "ssh", "--listen", "127.0.0.1:0"},
	} {
		_, _, err := tether(t, context.Background(), args...)
		if err == nil || !strings.Contains(err.Error(), "--hub") || !strings.Contains(err.Error(), "TETHER_HUB") {
			t.Errorf("%v: err = %v, want one naming --hub and TETHER_HUB", args, err)
		}
	}
}

func TestHubFromEnvironment(t *testing.T) {
	h := newTestHub(t)
	t.Setenv("TETHER_HUB", h.connStr)
	t.Setenv("TETHER_CA", h.caFile)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"endpoints"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
}

func TestBadConnectionString(t *testing.T) {
	cases := map[string]string{
		"garbage":                          "bad connection string",
		"HostName=h;SharedAccessKeyName=p": "SharedAccessKey is missing",
		"HostName=h;DeviceId=d;SharedAccessKey=" + testDevKey: "device",
	}
	for hub, want := range cases {
		_, _, err := tether(t, context.Background(), "--hub", hub, "devices", "list")
		if err == nil || !strings.Contains(err.Error(), "--hub") || !strings.Contains(err.Error(), want) {
			t.Errorf("--hub %q: err = %v, want one with --hub and %q", hub, err, want)
		}
		if err != nil && strings.Contains(err.Error(), testDevKey) {
			t.Errorf("the error shows the key: %v", err)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		args []string
		want string // "" for an errUsage the flag package explained
	}{
		{[]string{"devices"}, ""},
		{[]string{"devices", "frob"}, ""},
		{[]string{"devices", "add"}, "exactly one device ID"},
		{[]string{"devices", "show", "a", "b"}, "exactly one device ID"},
		{[]string{"devices", "list", "x"}, "no arguments"},
		{[]string{"devices", "list", "--bogus"}, ""},
		{[]string{"forward", "dev1"}, "a device and a stream"},
		{[]string{"forward", "dev1", "ssh"}, "--listen"},
		{[]string{"forward", "dev1", "a/b", "--listen", "1"}, "bad stream name"},
		{[]string{"endpoints", "x"}, "no arguments"},
	}
	for _, tc := range cases {
		_, _, err := tether(t, ctx, append([]string{"--hub", "HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + testPolicyKey}, tc.args...)...)
		switch {
		case tc.want == "" && !errors.Is(err, errUsage):
			t.Errorf("%v: err = %v, want errUsage", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
	for _, args := range [][]string{{"devices", "list", "-h"}, {"forward", "--help"}, {"endpoints", "-h"}} {
		if _, _, err := tether(t, ctx, args...); err != nil {
			t.Errorf("%v: err = %v, want nil", args, err)
		}
	}
}

func TestParseInterleaved(t *testing.T) {
	cases := []struct {
		args   []string
		pos    []string
		listen string
		json   bool
	}{
		{[]string{"dev1", "ssh", "--listen", ":2222"}, []string{"dev1", "ssh"}, ":2222", false},
		{[]string{"--listen=:1", "dev1", "--json", "ssh"}, []string{"dev1", "ssh"}, ":1", true},
		{[]string{"dev1", "--", "--listen", "x"}, []string{"dev1", "--listen", "x"}, "", false},
		{nil, nil, "", false},
	}
	for _, tc := range cases {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		listen := fs.String("listen", "", "")
		j := fs.Bool("json", false, "")
		pos, err := parseInterleaved(fs, tc.args)
		if err != nil || !reflect.DeepEqual(pos, tc.pos) || *listen != tc.listen || *j != tc.json {
			t.Errorf("%q: pos %q listen %q json %v err %v", tc.args, pos, *listen, *j, err)
		}
	}
}

func TestDevicesCommands(t *testing.T) {
	h := newTestHub(t)
	ctx := context.Background()
	hub := []string{"--hub", h.connStr, "--ca", h.caFile}

	out, _, err := tether(t, ctx, append(hub, "devices", "add", "dev1")...)
	if err != nil {
		t.Fatal(err)
	}
	if want := "HostName=" + h.host() + ";DeviceId=dev1;SharedAccessKey=" + testDevKey + "\n"; out != want {
		t.Errorf("add printed %q, want %q", out, want)
	}
	// Global flags also come after the command.
	if _, _, err := tether(t, ctx, "devices", "add", "a-longer-device", "--hub", h.connStr, "--ca", h.caFile); err != nil {
		t.Fatal(err)
	}

	out, _, err = tether(t, ctx, append(hub, "devices", "list")...)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a-longer-device  enabled  Disconnected\ndev1             enabled  Disconnected\n"; out != want {
		t.Errorf("list printed\n%s\nwant\n%s", out, want)
	}

	out, _, err = tether(t, ctx, append(hub, "devices", "list", "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var ds []wire.Device
	if err := json.Unmarshal([]byte(out), &ds); err != nil || len(ds) != 2 || ds[0].DeviceID != "a-longer-device" {
		t.Errorf("list --json printed %s (%v)", out, err)
	}

	out, _, err = tether(t, ctx, append(hub, "devices", "show", "dev1")...)
	if err != nil {
		t.Fatal(err)
	}
	var d wire.Device
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.DeviceID != "dev1" || !strings.Contains(out, "\n  \"deviceId\"") {
		t.Errorf("show printed %s (%v)", out, err)
	}

	if _, _, err := tether(t, ctx, append(hub, "devices", "add", "dev1")...); err == nil || err.Error() != `device "dev1" already exists` {
		t.Errorf("add twice: %v", err)
	}
	if _, _, err := tether(t, ctx, append(hub, "devices", "rm", "dev1", "--yes")...); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"show", "dev1"}, {"rm", "dev1", "--yes"}} {
		sub := args[0]
		if _, _, err := tether(t, ctx, append(append(hub, "devices"), args...)...); err == nil || err.Error() != `device "dev1" not found` {
			t.Errorf("%s of a deleted device: %v", sub, err)
		}
	}

	out, _, err = tether(t, ctx, append(hub, "endpoints")...)
	if err != nil || out != "https://"+h.host()+"\nhttps://other:8443\n" {
		t.Errorf("endpoints printed %q (%v)", out, err)
	}
}

func TestHubErrors(t *testing.T) {
	h := newTestHub(t)
	ctx := context.Background()
	wrongKey := "HostName=" + h.host() + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + testDevKey
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	deadHub := "HostName=" + dead + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + testPolicyKey

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--hub", wrongKey, "--ca", h.caFile, "devices", "list"}, "unauthorized: check the connection string"},
		{[]string{"--hub", h.connStr, "devices", "list"}, "certificate not trusted: pass --ca"},
		{[]string{"--hub", deadHub, "devices", "list"}, "hub unreachable at " + dead + ": "},
		{[]string{"--hub", h.connStr, "--ca", "/nonexistent/ca.pem", "devices", "list"}, "reading CA file"},
		{[]string{"--hub", h.connStr, "--ca", h.caFile, "forward", "nodev", "ssh", "--listen", "127.0.0.1:0"}, `device "nodev" not found`},
		{[]string{"--hub", wrongKey, "--ca", h.caFile, "forward", "nodev", "ssh", "--listen", "127.0.0.1:0"}, "unauthorized"},
		{[]string{"--hub", h.connStr, "forward", "nodev", "ssh", "--listen", "127.0.0.1:0"}, "certificate not trusted: pass --ca"},
	}
	for _, tc := range cases {
		_, _, err := tether(t, ctx, tc.args...)
		t.Logf("%v: %v", tc.args[2:], err)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v:\n err = %v\nwant one line starting %q", tc.args[2:], err, tc.want)
		}
	}
}

func TestForwardListenFails(t *testing.T) {
	h := newTestHub(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, _, err = tether(t, context.Background(), "forward", "dev1", "ssh", "--listen", ln.Addr().String(), "--hub", h.connStr, "--ca", h.caFile)
	if err == nil || !strings.HasPrefix(err.Error(), "cannot listen on "+ln.Addr().String()) {
		t.Errorf("err = %v", err)
	}
}

// A policy that may open streams but not read the registry still forwards.
func TestForwardWithoutRegistryRight(t *testing.T) {
	h := newTestHub(t)
	h.registryDenied = true
	ctx, cancel := context.WithCancel(context.Background())
	t.Setenv("TETHER_HUB", "")
	t.Setenv("TETHER_CA", "")
	stderr := newLockedBuffer()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"forward", "dev1", "echo", "--listen", "127.0.0.1:0", "--hub", h.connStr, "--ca", h.caFile}, io.Discard, stderr)
	}()
	stderr.waitFor(t, "forwarding 127.0.0.1:")
	if !strings.Contains(stderr.String(), "cannot read the registry") {
		t.Errorf("no note that the device was not checked:\n%s", stderr)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("forward returned %v", err)
	}
}

// TestForwardLifecycle starts forward, sees one connection fail because the
// device is offline and another rejected, then stops it with ctx.
func TestForwardLifecycle(t *testing.T) {
	// Registered first, so it runs after the fake hub's cleanup.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	h := newTestHub(t)
	h.devices["dev1"] = true
	h.offline = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("TETHER_HUB", "")
	t.Setenv("TETHER_CA", "")
	stderr := newLockedBuffer()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"forward", "dev1", "echo", "--listen", "127.0.0.1:0", "--hub", h.connStr, "--ca", h.caFile}, io.Discard, stderr)
	}()
	stderr.waitFor(t, "forwarding 127.0.0.1:")
	line := stderr.String()
	var port int
	if _, err := fmt.Sscanf(line, "forwarding 127.0.0.1:%d → dev1/echo\n", &port); err != nil {
		t.Fatalf("first line %q: %v", line, err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// Each failed stream closes its connection and says why, in one line.
	for _, want := range []string{`device "dev1" is not connected`, `device "dev1" rejected stream "echo"`} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("read %d bytes, %v; want EOF", n, err)
		}
		c.Close()
		stderr.waitFor(t, want)
		h.mu.Lock()
		h.offline = false
		h.mu.Unlock()
	}

	// An accepted stream relays both ways; ending ctx resets it: the client
	// must not take a stopped forwarder for the end of its data.
	h.mu.Lock()
	h.accept = true
	h.mu.Unlock()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"hello", strings.Repeat("x", 300<<10)} {
		go c.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %d bytes: %v", len(msg), err)
		}
	}

	// The device ending its stream ends the client's connection.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("bye"))
	if got, err := io.ReadAll(c2); err != nil || string(got) != "bye" {
		t.Errorf("read %q, %v; want bye then EOF", got, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("forward returned %v after ctx ended", err)
	}
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("open connection after return: read %d, %v; want a reset", n, err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still listening after return")
	}
	if n := strings.Count(stderr.String(), "\n"); n != 3 {
		t.Errorf("stderr has %d lines, want 3:\n%s", n, stderr)
	}
}
