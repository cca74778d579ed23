package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// pipeRun is `tether pipe` running with stdin and stdout as pipes the test
// holds, as ssh holds them.
type pipeRun struct {
	stdin  *io.PipeWriter
	stdout *io.PipeReader
	stderr *lockedBuffer
	done   chan error
}

func startPipe(t *testing.T, ctx context.Context, args ...string) *pipeRun {
	t.Helper()
	t.Setenv("TETHER_HUB", "")
	t.Setenv("TETHER_CA", "")
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	old := pipeStdin
	pipeStdin = inR
	p := &pipeRun{stdin: inW, stdout: outR, stderr: newLockedBuffer(), done: make(chan error, 1)}
	go func() { p.done <- run(ctx, append([]string{"pipe"}, args...), outW, p.stderr) }()
	t.Cleanup(func() {
		// Unblock a pipe the test left running before waiting for it.
		inW.Close()
		outR.Close()
		p.wait(t)
		pipeStdin = old
	})
	return p
}

// wait returns pipe's result, once.
func (p *pipeRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case err, ok := <-p.done:
		if ok {
			close(p.done)
		}
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("pipe did not return within 10 s")
		return nil
	}
}

func TestPipeUsageErrors(t *testing.T) {
	pipeStdin = strings.NewReader("")
	t.Cleanup(func() { pipeStdin = os.Stdin })
	hub := "HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + testPolicyKey
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pipe"}, "a device and a stream"},
		{[]string{"pipe", "dev1"}, "a device and a stream"},
		{[]string{"pipe", "dev1", "ssh", "extra"}, "a device and a stream"},
		{[]string{"pipe", "dev1", "a/b"}, "bad stream name"},
		{[]string{"pipe", "dev1", "ssh", "--bogus"}, errUsage.Error()},
	} {
		stdout, _, err := tether(t, context.Background(), append([]string{"--hub", hub}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
		if stdout != "" {
			t.Errorf("%v: wrote %q to stdout", tc.args, stdout)
		}
	}
	stdout, stderr, err := tether(t, context.Background(), "pipe", "-h")
	if err != nil || stdout != "" || !strings.Contains(stderr, "ProxyCommand") {
		t.Errorf("pipe -h: err %v, stdout %q, stderr %q; want usage on stderr only", err, stdout, stderr)
	}
}

// Each failure is one line naming its cause, and nothing on stdout.
func TestPipeErrors(t *testing.T) {
	h := newTestHub(t)
	h.devices["dev1"] = true
	pipeStdin = strings.NewReader("never read")
	t.Cleanup(func() { pipeStdin = os.Stdin })
	wrongKey := "HostName=" + h.host() + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + testDevKey
	dead := deadAddr(t)
	deadHub := "HostName=" + dead + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + testPolicyKey

	for _, tc := range []struct {
		offline bool
		args    []string
		want    string
	}{
		{true, []string{"--hub", h.connStr, "--ca", h.caFile}, `device "dev1" is not connected to the hub`},
		{false, []string{"--hub", h.connStr, "--ca", h.caFile}, `device "dev1" rejected stream "ssh" (is it in the agent's --allow list, and does its target accept connections?)`},
		{false, []string{"--hub", wrongKey, "--ca", h.caFile}, "unauthorized: check the connection string"},
		{false, []string{"--hub", h.connStr}, "certificate not trusted: pass --ca"},
		{false, []string{"--hub", deadHub}, "hub unreachable at " + dead + ": "},
		{false, nil, "no hub given"},
	} {
		h.mu.Lock()
		h.offline = tc.offline
		h.mu.Unlock()
		args := append([]string{"pipe", "dev1", "ssh"}, tc.args...)
		stdout, _, err := tether(t, context.Background(), args...)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v:\n err = %v\nwant one line starting %q", tc.args, err, tc.want)
		}
		if stdout != "" {
			t.Errorf("%v: wrote %q to stdout", tc.args, stdout)
		}
	}
}

// Bytes go both ways; the device ending the stream closes stdout and ends
// pipe although stdin is still open.
func TestPipeRelaysUntilStreamEnds(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	h := newTestHub(t)
	h.devices["dev1"] = true
	h.accept = true
	// Flags after the positionals, as forward takes them.
	p := startPipe(t, context.Background(), "dev1", "echo", "--hub", h.connStr, "--ca", h.caFile)

	for _, msg := range []string{"hello", strings.Repeat("x", 300<<10)} {
		go p.stdin.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(p.stdout, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %d bytes: %v", len(msg), err)
		}
	}
	go p.stdin.Write([]byte("bye"))
	if got, err := io.ReadAll(p.stdout); err != nil || string(got) != "bye" {
		t.Errorf("stdout %q, %v; want bye then EOF", got, err)
	}
	if err := p.wait(t); err != nil {
		t.Errorf("pipe returned %v", err)
	}
	if s := p.stderr.String(); s != "" {
		t.Errorf("stderr %q, want nothing", s)
	}
}

// A signal ends pipe cleanly and closes stdout.
func TestPipeStopsWithContext(t *testing.T) {
	h := newTestHub(t)
	h.devices["dev1"] = true
	h.accept = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := startPipe(t, ctx, "--hub", h.connStr, "--ca", h.caFile, "dev1", "echo")
	go p.stdin.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(p.stdout, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	cancel()
	if err := p.wait(t); err != nil {
		t.Errorf("pipe returned %v after ctx ended", err)
	}
	if got, err := io.ReadAll(p.stdout); err != nil || len(got) != 0 {
		t.Errorf("stdout after return: %q, %v; want EOF", got, err)
	}
}

// hashServer plays a device service that answers only once its input has
// ended: it reads to EOF, writes the hex SHA-256 of what it read and closes.
func hashServer(t *testing.T, c net.Conn) {
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil {
		t.Errorf("hash server: %v", err)
	}
	io.WriteString(c, hex.EncodeToString(h.Sum(nil)))
	c.Close()
}

// stdin's EOF reaches a stream that can half-close as EOF, and the answer
// sent after it still reaches stdout, which is closed after it.
func TestStdioHalfClosesStream(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	stream, device := tcpPair(t)
	go hashServer(t, device)
	input := make([]byte, 1<<20)
	rand.Read(input)
	sum := sha256.Sum256(input)
	outR, outW := io.Pipe()
	local := newStdio(bytes.NewReader(input), outW)
	defer local.Close()
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), local, stream, "stdin → device", "device → stdout") }()

	got, err := io.ReadAll(outR)
	if err != nil || string(got) != hex.EncodeToString(sum[:]) {
		t.Errorf("stdout %q, %v; want the input's hash then EOF", got, err)
	}
	if err := <-done; err != nil {
		t.Errorf("relay: %v", err)
	}
}

// A stream without half-close is closed at stdin's EOF, so the device
// sees EOF all the same, and stdout is closed.
func TestStdioClosesStreamWithoutHalfClose(t *testing.T) {
	stream, device := net.Pipe()
	outR, outW := io.Pipe()
	local := newStdio(strings.NewReader("last words"), outW)
	defer local.Close()
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), local, stream, "stdin → device", "device → stdout") }()
	if got, err := io.ReadAll(device); err != nil || string(got) != "last words" {
		t.Errorf("device read %q, %v; want the input then EOF", got, err)
	}
	if got, err := io.ReadAll(outR); err != nil || len(got) != 0 {
		t.Errorf("stdout %q, %v; want EOF", got, err)
	}
	if err := <-done; err != nil {
		t.Errorf("relay: %v", err)
	}
}

// A read deadline ends a Read blocked on stdin, which relay relies on to
// stop once the stream has ended; clearing it lets reads go on.
func TestStdioReadDeadline(t *testing.T) {
	inR, inW := io.Pipe()
	s := newStdio(inR, io.Discard)
	defer s.Close()
	buf := make([]byte, 8)

	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d, %v; want the deadline", n, err)
	}
	s.SetReadDeadline(time.Now())
	if n, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d, %v; want the deadline", n, err)
	}
	s.SetReadDeadline(time.Time{})
	go inW.Write([]byte("0123456789"))
	var got []byte
	for len(got) < 10 {
		n, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "0123456789" {
		t.Errorf("read %q", got)
	}
	inW.Close()
	if n, err := s.Read(buf); err != io.EOF {
		t.Errorf("read %d, %v after stdin ended; want EOF", n, err)
	}
	if n, err := s.Read(buf); err != io.EOF {
		t.Errorf("second read %d, %v after stdin ended; want EOF", n, err)
	}
}
