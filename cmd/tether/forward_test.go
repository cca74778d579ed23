package main

import (
	"context"
	"io"
	"net"
	"testing"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A stream (net.Pipe here, like wsconn without half-close) ending must end
// the client connection too, and the relay with it.
func TestRelayStreamEnds(t *testing.T) {
	user, client := tcpPair(t)
	stream, device := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), client, stream, "client → device", "device → client") }()

	go func() {
		user.Write([]byte("ping"))
	}()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(device, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("device read %q, %v", buf, err)
	}
	go func() {
		device.Write([]byte("pong"))
		device.Close()
	}()
	got, err := io.ReadAll(user)
	if err != nil || string(got) != "pong" {
		t.Errorf("user read %q, %v; want pong then EOF", got, err)
	}
	if err := <-done; err != nil {
		t.Errorf("relay: %v", err)
	}
}

// The client closing ends the stream, which the device sees as EOF.
func TestRelayClientEnds(t *testing.T) {
	user, client := tcpPair(t)
	stream, device := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), client, stream, "client → device", "device → client") }()

	go func() {
		user.Write([]byte("bye"))
		user.Close()
	}()
	got, err := io.ReadAll(device)
	if err != nil || string(got) != "bye" {
		t.Errorf("device read %q, %v; want bye then EOF", got, err)
	}
	if err := <-done; err != nil {
		t.Errorf("relay: %v", err)
	}
}
