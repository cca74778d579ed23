package main

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestOnLoopbackHost(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:22": true, "127.1.2.3:80": true, "[::1]:22": true, "localhost:22": true,
		"192.0.2.1:22": false, ":22": false, "0.0.0.0:22": false, "[::]:22": false, "example.com:22": false, "22": false,
	} {
		if got := onLoopbackHost(addr); got != want {
			t.Errorf("onLoopbackHost(%q) = %v, want %v", addr, got, want)
		}
	}
}

// keepAliveOn reads SO_KEEPALIVE of c.
func keepAliveOn(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v != 0
}

// TestLocalKeepAlive: the forwarder's loopback listener and the agent's
// dial of a loopback target make connections without keep-alive probes;
// Go's default, which makes them, stays for other addresses.
func TestLocalKeepAlive(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		ka   time.Duration
		want bool
	}{
		{keepAliveFor("127.0.0.1:0"), false},
		{keepAliveFor("192.0.2.1:0"), true}, // listened on loopback all the same: only the setting differs
	} {
		lc := net.ListenConfig{KeepAlive: tc.ka}
		ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		d := net.Dialer{KeepAlive: tc.ka}
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got := keepAliveOn(t, s); got != tc.want {
			t.Errorf("KeepAlive %v: the accepted connection's SO_KEEPALIVE %v, want %v", tc.ka, got, tc.want)
		}
		if got := keepAliveOn(t, c); got != tc.want {
			t.Errorf("KeepAlive %v: the dialed connection's SO_KEEPALIVE %v, want %v", tc.ka, got, tc.want)
		}
		c.Close()
		s.Close()
		ln.Close()
	}
}
