package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// cutTarget is a device-side service whose connections do one of two
// things, chosen by the client's first byte: 'F' (fountain) sends data
// until the connection fails, 'S' (sink) reads until it fails and reports
// how. A tunnel cut mid-transfer must end a sink's read with a reset,
// never with EOF, which would say the client's data was complete. Each
// connection only writes or only reads: a socket reports a reset once,
// to whichever call comes first, so a write would hide it from the read.
type cutTarget struct {
	addr     string
	sunk     atomic.Int64 // bytes the sinks read
	sinkEnds chan error   // how each sink's read ended
}

func startCutTarget(t *testing.T) *cutTarget {
	t.Helper()
	ct := &cutTarget{sinkEnds: make(chan error, 8)}
	ct.addr = serveTCP(t, func(c net.Conn) {
		defer c.Close()
		// Bounded, so that a tunnel that never ends cannot outlive the test.
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		var mode [1]byte
		if _, err := io.ReadFull(c, mode[:]); err != nil {
			return
		}
		switch mode[0] {
		case 'F':
			buf := make([]byte, 32<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		case 'S':
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				ct.sunk.Add(int64(n))
				if err != nil {
					if err == io.EOF {
						err = nil
					}
					ct.sinkEnds <- err
					return
				}
			}
		}
	})
	return ct
}

// TestHubKilledMidStream kills the hub (SIGKILL) while streams carry data
// through tether forward, tether pipe and tether agent: every local side
// is reset rather than closed, pipe fails saying so, and the hub started
// again on its data folder records each of those streams as interrupted,
// and none that had ended.
func TestHubKilledMidStream(t *testing.T) {
	t.Parallel()
	h := startResilienceHub(t)
	devStr := h.addDevice(t, "dev1")
	target := startCutTarget(t)
	ca := strings.TrimPrefix(h.env[1], "TETHER_CA=")
	startProc(t, []string{"TETHER_DEVICE=" + devStr, "TETHER_CA=" + ca}, h.tether,
		"agent", "--allow", "bulk="+target.addr, "--allow", "echo="+startEcho(t))
	fwd := startProc(t, h.env, h.tether, "forward", "dev1", "bulk", "--listen", "127.0.0.1:0")
	fwdAddr := fwd.forwarding(t, 30*time.Second)
	waitConnected(t, h.env, h.tether, "dev1")

	// A stream that ended before the kill: its record is written, and it
	// is no interrupted one.
	r := runTool(t, time.Minute, h.env, strings.NewReader("done"), h.tether, "pipe", "dev1", "echo")
	r.mustSucceed(t, "tether pipe dev1 echo")

	// Data from the device to a client of the forwarder.
	down, err := net.Dial("tcp", fwdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	down.SetDeadline(time.Now().Add(time.Minute))
	if _, err := down.Write([]byte("F")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(down, make([]byte, 1<<20)); err != nil {
		t.Fatalf("reading through the forwarder: %v", err)
	}

	// Data from a client of the forwarder to the device.
	up, err := net.Dial("tcp", fwdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		up.Write([]byte("S"))
		buf := make([]byte, 32<<10)
		for {
			if _, err := up.Write(buf); err != nil {
				return
			}
		}
	}()
	eventually(t, 30*time.Second, "1 MiB at the device's sink", func() bool { return target.sunk.Load() >= 1<<20 })

	// tether pipe, with data from the device to stdout and stdin open.
	pipe := exec.Command(h.tether, "pipe", "dev1", "bulk")
	pipe.Env = append(os.Environ(), h.env...)
	stdin, err := pipe.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := pipe.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	pipe.Stderr = &stderr
	if err := pipe.Start(); err != nil {
		t.Fatal(err)
	}
	pipeFlowing, pipeDone := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := io.ReadFull(stdout, make([]byte, 1<<20))
		pipeFlowing <- err
		io.Copy(io.Discard, stdout)
		pipeDone <- pipe.Wait()
	}()
	if _, err := stdin.Write([]byte("F")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pipeFlowing:
		if err != nil {
			t.Fatalf("pipe's stdout: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no data on pipe's stdout within 30 s")
	}

	if err := h.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-h.proc.done

	// The client reading from the device: a reset, not EOF.
	_, err = io.Copy(io.Discard, down)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the forwarder's client read ended with %v, want a reset (ECONNRESET): EOF says the data was complete", err)
	}
	// The device's service reading from the client: a reset too.
	select {
	case err := <-target.sinkEnds:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the agent's target read ended with %v, want a reset (ECONNRESET)", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the agent's target was not told within 30 s")
	}
	// pipe: non-zero, saying the stream was cut and how far it got.
	select {
	case err := <-pipeDone:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("tether pipe exited %v, want non-zero", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tether pipe did not exit within 30 s of the hub's death")
	}
	msg := stderr.String()
	if !strings.Contains(msg, "the stream was cut") || !strings.Contains(msg, "went stdin → device") || !strings.Contains(msg, "device → stdout") {
		t.Errorf("tether pipe's stderr %q does not say the stream was cut and how many bytes went each way", msg)
	}

	// The hub started again on the same data folder records the three
	// streams it had open, and none other, as interrupted.
	h.start(t)
	out, errOut, err := runCmd(t, h.env, h.tether, "logs", "--json", "--device", "dev1")
	if err != nil {
		t.Fatalf("tether logs: %v: %s", err, errOut)
	}
	var interrupted, accepted int
	ids := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var rec wire.StreamLog
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("a record that is no JSON: %q", sc.Text())
		}
		p, err := rec.Props()
		if err != nil {
			t.Fatal(err)
		}
		switch p.Result {
		case wire.ResultInterrupted:
			interrupted++
			ids[p.StreamID] = true
			if p.RequestName != "bulk" || p.StreamID == "" || rec.ResultType != "Failure" || p.Node == "" {
				t.Errorf("interrupted record %+v of %+v", p, rec)
			}
		case wire.ResultAccepted:
			accepted++
			if p.RequestName != "echo" {
				t.Errorf("stream %q recorded as ended: %+v", p.RequestName, p)
			}
		}
	}
	if interrupted != 3 || len(ids) != 3 {
		t.Errorf("%d interrupted records (%d streams), want one for each of the 3 streams open at the kill:\n%s", interrupted, len(ids), out)
	}
	if accepted != 1 {
		t.Errorf("%d accepted records, want the echo's alone:\n%s", accepted, out)
	}
}
