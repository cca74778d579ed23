package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestMuxHeaderRoundTrip(t *testing.T) {
	in := MuxOpen{DeviceID: "dev-1", ModuleID: "m", Name: "ssh", ConnectTimeoutMs: 1500}
	b, err := AppendMuxHeader(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, "early"...)
	r := bytes.NewReader(b)
	var out MuxOpen
	if err := ReadMuxHeader(r, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("got %+v, want %+v", out, in)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "early" {
		t.Fatalf("read past the header: left %q", rest)
	}
}

func TestMuxHeaderRefusesBadInput(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty length": {0, 0},
		"too long":     {0xff, 0xff},
		"not JSON":     append([]byte{0, 3}, "abc"...),
	} {
		var v MuxAnswer
		if err := ReadMuxHeader(bytes.NewReader(in), &v); !errors.Is(err, ErrMuxHeader) {
			t.Errorf("%s: got %v, want ErrMuxHeader", name, err)
		}
	}
	var v MuxAnswer
	if err := ReadMuxHeader(bytes.NewReader([]byte{0, 9, '{'}), &v); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut header: got %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := AppendMuxHeader(nil, MuxOpen{Name: strings.Repeat("x", MaxMuxHeader)}); !errors.Is(err, ErrMuxHeader) {
		t.Errorf("oversized header written: %v", err)
	}
}

func TestStreamRequestMuxProperty(t *testing.T) {
	r := StreamRequest{Name: "ssh", RID: "7", URL: "wss://h/bridges/x", Token: "T", Mux: true}
	if !strings.HasSuffix(r.Topic(), "&$tmux=1") {
		t.Fatalf("topic %q lacks the session property", r.Topic())
	}
	got, err := ParseStreamRequest(r.Topic())
	if err != nil || got != r {
		t.Fatalf("parsed %+v, %v; want %+v", got, err, r)
	}
	r.Mux = false
	if got, _ := ParseStreamRequest(r.Topic()); got.Mux {
		t.Fatal("Mux set without the property")
	}
}

func TestMuxDevicePath(t *testing.T) {
	if got := MuxDevicePath("a b", ""); got != "/$tether/mux/devices/a%20b" {
		t.Errorf("device path %q", got)
	}
	if got := MuxDevicePath("d", "m/1"); got != "/$tether/mux/devices/d/modules/m%2F1" {
		t.Errorf("module path %q", got)
	}
}
