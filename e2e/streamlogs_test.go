package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// syncBuffer collects the hub's log lines from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// recordsOf reads every stored record whose stream name is name.
func recordsOf(t *testing.T, svc *service.Client, name string) []wire.StreamLogProperties {
	t.Helper()
	var out []wire.StreamLogProperties
	err := svc.StreamLogs(context.Background(), service.LogQuery{}, func(r wire.StreamLog) error {
		p, err := r.Props()
		if err != nil {
			t.Errorf("record with malformed properties: %v", err)
			return nil
		}
		if p.RequestName == name {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStreamLogRecords: each kind of stream invocation leaves exactly one
// record with the right result and fields, and nothing secret is written
// to the records or to the hub's log.
func TestStreamLogRecords(t *testing.T) {
	t.Parallel()
	hubLog := &syncBuffer{}
	h := startHub(t, hubOptions{logTo: hubLog})
	devStr := h.addDevice(t, "dev1")
	dc := h.connectDevice(t, devStr, device.WebSocket)
	svc := h.service(t)
	ctx := context.Background()

	// Accepted: bytes each way are counted exactly.
	const up, down = 300_000, 123_457
	go func() {
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			if req.Name != "bulk" {
				_ = req.Reject()
				continue
			}
			conn, err := req.Accept(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			go func() {
				defer conn.Close()
				if _, err := io.CopyN(io.Discard, conn, up); err != nil {
					t.Errorf("device read: %v", err)
				}
				if _, err := conn.Write(make([]byte, down)); err != nil {
					t.Errorf("device write: %v", err)
				}
			}()
		}
	}()
	conn, err := svc.OpenStream(ctx, "dev1", "bulk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(make([]byte, up)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := io.Copy(io.Discard, conn); err != nil || n != down {
		t.Fatalf("service read %d bytes, %v", n, err)
	}
	conn.Close()

	// Rejected, offline, timed out.
	if _, err := svc.OpenStream(ctx, "dev1", "nope"); !errors.Is(err, service.ErrRejected) {
		t.Fatal(err)
	}
	h.addDevice(t, "dev2")
	if _, err := svc.OpenStream(ctx, "dev2", "away"); !errors.Is(err, service.ErrDeviceOffline) {
		t.Fatal(err)
	}
	stop := rawDeviceAnswering(t, h, h.addDevice(t, "dev3"), 0)
	defer stop()
	quick, err := service.New(h.Owner, svcOptions(service.Options{TLSConfig: h.TLS, ResponseTimeout: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := quick.OpenStream(ctx, "dev3", "silent"); !errors.Is(err, service.ErrTimeout) {
		t.Fatal(err)
	}

	// The accepted stream's record is written when the stream ends.
	var bulk []wire.StreamLogProperties
	eventually(t, 10*time.Second, "the accepted stream's record", func() bool {
		bulk = recordsOf(t, svc, "bulk")
		return len(bulk) > 0
	})
	for name, want := range map[string]struct {
		result string
		status int
	}{
		"bulk":   {wire.ResultAccepted, 200},
		"nope":   {wire.ResultRejected, 200},
		"away":   {wire.ResultOffline, 404},
		"silent": {wire.ResultTimedOut, 504},
	} {
		recs := recordsOf(t, svc, name)
		if len(recs) != 1 {
			t.Errorf("%s: %d records, want exactly 1", name, len(recs))
			continue
		}
		p := recs[0]
		if p.Result != want.result || p.StatusCode != want.status || p.Policy != "iothubowner" || p.Direction != "c2d" || p.StreamID == "" {
			t.Errorf("%s: %+v", name, p)
		}
	}
	p := bulk[0]
	if p.BytesToDevice != up || p.BytesToService != down {
		t.Errorf("bytes: to device %d (sent %d), to service %d (sent %d)", p.BytesToDevice, up, p.BytesToService, down)
	}
	if p.ClosedBy == "" || p.DeviceID != "dev1" {
		t.Errorf("accepted record: %+v", p)
	}

	// Secrets: the keys, a service SAS signature and the stream tokens
	// this test used appear nowhere.
	rawDev := rawDeviceAnswering(t, h, h.addDevice(t, "dev4"), 200)
	defer rawDev()
	_, streamTok := h.openRaw(t, "dev4", "raw")
	ownerTok := h.ownerToken(t, time.Hour)
	resp := h.rawCreateStream(t, "dev1", "nope", ownerTok)
	resp.Body.Close()
	sig := ownerTok[strings.Index(ownerTok, "sig=")+4:]
	sig = sig[:strings.IndexByte(sig, '&')]
	var all bytes.Buffer
	svc.StreamLogs(ctx, service.LogQuery{}, func(r wire.StreamLog) error {
		all.WriteString(r.Properties + r.ResultDescription + "\n")
		return nil
	})
	ocs, _ := sas.ParseConnectionString(h.Owner)
	dcs, _ := sas.ParseConnectionString(devStr)
	secrets := map[string]string{
		"owner key": ocs.SharedAccessKey, "device key": dcs.SharedAccessKey,
		"SAS signature": sig, "stream token": streamTok, "device stream token": "$auth=",
	}
	for what, secret := range secrets {
		for where, text := range map[string]string{"hub log": hubLog.String(), "stream logs": all.String()} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
	}
	if !strings.Contains(hubLog.String(), `"stream":"bulk"`) {
		t.Error("the hub's log has no line for the stream")
	}
}

// TestLogsFollow: `tether logs --follow` prints a record for a stream
// opened after it started.
func TestLogsFollow(t *testing.T) {
	t.Parallel()
	_, tether := buildBinaries(t)
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	serveEcho(t, dc)
	env := []string{"TETHER_HUB=" + h.Owner, "TETHER_CA=" + filepath.Join(h.Dir, "ca.pem")}
	follower := startProc(t, env, tether, "logs", "--follow", "--device", "dev1")
	// The follower is connected once the hub has answered it; a stream
	// opened before that would be in the past. Open streams until one is
	// printed: each is newer than the follower's start by construction.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		conn, err := h.service(t).OpenStream(context.Background(), "dev1", "followed")
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, conn, "x")
		conn.Close()
		select {
		case line := <-follower.out.lines:
			if strings.HasPrefix(line, "ENDED ") {
				continue // the header row
			}
			if !strings.Contains(line, "followed") || !strings.Contains(line, "accepted") {
				t.Fatalf("tether logs printed %q", line)
			}
			if err := follower.stop(t); err != nil {
				t.Fatalf("tether logs --follow exited with %v", err)
			}
			return
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatal("tether logs --follow printed nothing")
		}
	}
}

// TestStreamsListing: `tether streams` shows an open stream, with its
// bytes, and stops showing it after close.
func TestStreamsListing(t *testing.T) {
	t.Parallel()
	_, tether := buildBinaries(t)
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	serveEcho(t, dc)
	env := []string{"TETHER_HUB=" + h.Owner, "TETHER_CA=" + filepath.Join(h.Dir, "ca.pem")}
	conn, err := h.service(t).OpenStream(context.Background(), "dev1", "listed")
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, conn, "12345")
	out, stderr, err := runCmd(t, env, tether, "streams")
	if err != nil {
		t.Fatalf("tether streams: %v: %s", err, stderr)
	}
	if !regexp.MustCompile(`(?m)^dev1\s+listed\s+open\s+\S+\s+5\s+5\s+\S+`).MatchString(out) {
		t.Fatalf("tether streams while open:\n%s", out)
	}
	conn.Close()
	eventually(t, 10*time.Second, "the closed stream to leave the list", func() bool {
		out, _, err := runCmd(t, env, tether, "streams", "--device", "dev1")
		return err == nil && !strings.Contains(out, "listed")
	})
}
