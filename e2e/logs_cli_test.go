package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// cliEnv points the tether CLI at h with its owner policy.
func cliEnv(h *testHub) []string {
	return []string{"TETHER_HUB=" + h.Owner, "TETHER_CA=" + filepath.Join(h.Dir, "ca.pem")}
}

// deviceLogRecords reads every stream-log record of device dev, oldest first.
func deviceLogRecords(t *testing.T, svc *service.Client, dev string) []wire.StreamLogProperties {
	t.Helper()
	var out []wire.StreamLogProperties
	err := svc.StreamLogs(context.Background(), service.LogQuery{DeviceID: dev}, func(r wire.StreamLog) error {
		p, err := r.Props()
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// streamIDs are the stream ids of recs, in order.
func streamIDs(recs []wire.StreamLogProperties) []string {
	ids := make([]string, len(recs))
	for i, p := range recs {
		ids[i] = p.StreamID
	}
	return ids
}

// echoStream opens a stream named name to dev through svc and sends n
// bytes through it, which the agent's echo target sends back.
func echoStream(t *testing.T, svc *service.Client, dev, name string, n int) {
	t.Helper()
	conn, err := svc.OpenStream(context.Background(), dev, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	defer conn.Close()
	payload := randomBytes(t, n)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		werr <- err
	}()
	back := make([]byte, n)
	if _, err := io.ReadFull(conn, back); err != nil || !bytes.Equal(back, payload) {
		t.Fatalf("stream %s: %d bytes did not come back: %v", name, n, err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// tableRows splits the table tether logs prints into its header and
// rows, each row's cells found under the header's columns.
func tableRows(t *testing.T, out string) (header string, rows []map[string]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header = lines[0]
	if !strings.HasPrefix(header, "ENDED ") {
		t.Fatalf("no header row first:\n%s", out)
	}
	cols := strings.Fields(header)
	starts := make([]int, len(cols))
	for i, c := range cols {
		starts[i] = strings.Index(header, " "+c+" ") + 1
		if i == 0 {
			starts[i] = 0
		} else if c == cols[len(cols)-1] {
			starts[i] = strings.LastIndex(header, " "+c) + 1
		}
	}
	for _, l := range lines[1:] {
		row := map[string]string{}
		for i, c := range cols {
			end := len(l)
			if i+1 < len(cols) {
				end = min(starts[i+1], len(l))
			}
			row[c] = strings.TrimSpace(l[min(starts[i], len(l)):end])
		}
		rows = append(rows, row)
	}
	return header, rows
}

// TestLogsTableAndAgentStreamID runs the agent and tether logs as a user
// does: the table has a header row, the records newest last, sizes in
// binary units, the address each stream's service called from and the
// stream's id, which the agent's log names too; -n, --since and --json
// select and print what they say.
func TestLogsTableAndAgentStreamID(t *testing.T) {
	t.Parallel()
	_, tether := buildBinaries(t)
	h := startHub(t, hubOptions{})
	env := cliEnv(h)
	devStr := h.addDevice(t, "dev1")
	agent := startProc(t, append(slices.Clone(env), "TETHER_DEVICE="+devStr), tether, "agent", "--allow", "echo="+startEcho(t))
	waitConnected(t, env, tether, "dev1")
	svc := h.service(t)

	// Each stream is recorded before the next opens: a stream's record is
	// written when the hub ends it, after its close handshake, and the
	// rows' order below is the records'.
	recorded := func(n int) {
		eventually(t, 10*time.Second, fmt.Sprintf("%d records", n), func() bool {
			return len(deviceLogRecords(t, svc, "dev1")) == n
		})
	}
	echoStream(t, svc, "dev1", "echo", 3<<19) // 1.5 MiB each way
	recorded(1)
	if _, err := svc.OpenStream(context.Background(), "dev1", "nope"); !errors.Is(err, service.ErrRejected) {
		t.Fatalf("a stream the agent does not serve: %v", err)
	}
	recorded(2)
	echoStream(t, svc, "dev1", "echo", 5)
	var recs []wire.StreamLogProperties
	eventually(t, 10*time.Second, "three records", func() bool {
		recs = deviceLogRecords(t, svc, "dev1")
		return len(recs) == 3
	})
	ids := streamIDs(recs)

	out, stderr, err := runCmd(t, env, tether, "logs")
	if err != nil {
		t.Fatalf("tether logs: %v: %s", err, stderr)
	}
	header, rows := tableRows(t, out)
	if len(rows) != 3 {
		t.Fatalf("tether logs printed %d rows, want 3:\n%s", len(rows), out)
	}
	for i, r := range rows {
		if r["STREAM-ID"] != ids[i] {
			t.Errorf("row %d is stream %s, want %s (the hub's order, newest last):\n%s", i, r["STREAM-ID"], ids[i], out)
		}
		if i > 0 && r["ENDED"] < rows[i-1]["ENDED"] {
			t.Errorf("row %d ended %s, before the row above it (%s)", i, r["ENDED"], rows[i-1]["ENDED"])
		}
		if host, _, err := net.SplitHostPort(r["SERVICE"]); err != nil || host != "127.0.0.1" {
			t.Errorf("row %d: SERVICE %q, want this test's address", i, r["SERVICE"])
		}
	}
	if r := rows[0]; r["TO-DEVICE"] != "1.5 MiB" || r["TO-SERVICE"] != "1.5 MiB" || r["RESULT"] != "accepted" || r["STREAM"] != "echo" {
		t.Errorf("the 1.5 MiB stream's row: %v\n%s\n%s", r, header, out)
	}
	if r := rows[1]; r["RESULT"] != "rejected" || r["TO-DEVICE"] != "-" {
		t.Errorf("the rejected stream's row: %v", r)
	}
	if r := rows[2]; r["TO-DEVICE"] != "5 B" {
		t.Errorf("the 5-byte stream's row: %v", r)
	}

	// The agent logged each stream with the hub's id of it.
	for _, id := range ids {
		if !strings.Contains(agent.out.String(), "streamId="+id) {
			t.Errorf("the agent's log never names stream %s:\n%s", id, agent.out.String())
		}
	}

	// -n: the last ones; --since: a window, of days or from a time.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-n", "2"}, ids[1:]},
		{[]string{"-n", "1", "--device", "dev1"}, ids[2:]},
		{[]string{"--since", "1d"}, ids},
		{[]string{"--since", "2020-01-01T00:00:00Z", "-n", "2"}, ids[1:]},
		{[]string{"--since", "2099-01-01T00:00:00Z"}, nil},
	} {
		out, stderr, err := runCmd(t, env, tether, append([]string{"logs"}, tc.args...)...)
		if err != nil {
			t.Fatalf("tether logs %v: %v: %s", tc.args, err, stderr)
		}
		_, rows := tableRows(t, out)
		var got []string
		for _, r := range rows {
			got = append(got, r["STREAM-ID"])
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("tether logs %v: streams %v, want %v\n%s", tc.args, got, tc.want, out)
		}
	}

	// --json: the hub's records, in their shape, with the new field.
	out, stderr, err = runCmd(t, env, tether, "logs", "--json", "-n", "1")
	if err != nil {
		t.Fatalf("tether logs --json: %v: %s", err, stderr)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("tether logs --json -n 1 printed %q (%v)", out, err)
	}
	if _, ok := rec["sequence"]; ok || !strings.Contains(rec["properties"].(string), `"serviceAddress":"127.0.0.1:`) {
		t.Errorf("tether logs --json: %s", out)
	}

	// Bad input: a clear line, nothing printed.
	for _, args := range [][]string{{"--since", "yesterday"}, {"-n", "-3"}} {
		out, stderr, err := runCmd(t, env, tether, append([]string{"logs"}, args...)...)
		if err == nil || out != "" || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("tether logs %v: %v, stdout %q, stderr %q; want one line of error", args, err, out, stderr)
		}
	}
}

// TestLogsFollowSurvivesHubRestart follows a real tetherd's stream logs
// across a restart of the hub: the follower waits for it, then prints
// every record it has not printed yet, the ones written while it was
// away included, and none twice.
func TestLogsFollowSurvivesHubRestart(t *testing.T) {
	t.Parallel()
	h := startResilienceHub(t)
	devStr := h.addDevice(t, "dev1")
	startProc(t, append(slices.Clone(h.env), "TETHER_DEVICE="+devStr), h.tether, "agent", "--allow", "echo="+startEcho(t))
	waitConnected(t, h.env, h.tether, "dev1")
	owner, _ := strings.CutPrefix(h.env[0], "TETHER_HUB=")
	svc, err := service.New(owner, svcOptions(service.Options{TLSConfig: &tls.Config{RootCAs: caPool(h.dir)}}))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	follower := startProc(t, h.env, h.tether, "logs", "--follow", "--json", "--device", "dev1")
	printed := func() []string {
		t.Helper()
		var ids []string
		for _, l := range strings.Split(follower.out.String(), "\n") {
			var rec wire.StreamLog
			if json.Unmarshal([]byte(l), &rec) != nil {
				continue
			}
			p, err := rec.Props()
			if err != nil {
				t.Fatalf("the follower printed %q: %v", l, err)
			}
			ids = append(ids, p.StreamID)
		}
		return ids
	}
	waitPrinted := func(n int) {
		t.Helper()
		eventually(t, 60*time.Second, "the follower to print its records", func() bool { return len(printed()) >= n })
	}

	for range 3 {
		echoStream(t, svc, "dev1", "echo", 100)
	}
	waitPrinted(3)

	if err := h.proc.stop(t); err != nil {
		t.Fatalf("tetherd exited with %v after SIGTERM", err)
	}
	h.start(t)
	// Records written as soon as the hub can: the follower is likely
	// still waiting to try again, and must not miss them. Until the
	// agent is back, a stream is refused (and recorded: offline).
	after := 0
	eventually(t, 30*time.Second, "three streams after the restart", func() bool {
		conn, err := svc.OpenStream(context.Background(), "dev1", "echo")
		if err != nil {
			if !errors.Is(err, service.ErrDeviceOffline) {
				t.Fatalf("a stream after the restart: %v", err)
			}
			return false
		}
		echoOnce(t, conn, "after")
		conn.Close()
		after++
		return after == 3
	})
	var hub []wire.StreamLogProperties
	eventually(t, 10*time.Second, "six records of accepted streams", func() bool {
		hub = deviceLogRecords(t, svc, "dev1")
		return len(slices.DeleteFunc(slices.Clone(hub), func(p wire.StreamLogProperties) bool { return p.Result != wire.ResultAccepted })) == 6
	})
	waitPrinted(len(hub))
	if got := printed(); !slices.Equal(got, streamIDs(hub)) {
		t.Errorf("the follower printed streams\n%v\nthe hub recorded\n%v", got, streamIDs(hub))
	}
	if !strings.Contains(follower.out.String(), "lost the hub") {
		t.Errorf("the follower did not say it lost the hub:\n%s", follower.out.String())
	}
	if err := follower.stop(t); err != nil {
		t.Errorf("tether logs --follow exited with %v", err)
	}
}

// TestStreamsKill: an operator lists the open streams on one node and
// ends one homed on another; both sides see it end, its record says who
// ended it, and ending a stream takes ServiceConnect.
func TestStreamsKill(t *testing.T) {
	t.Parallel()
	_, tether := buildBinaries(t)
	natsURL := startNATS(t)
	a := startHub(t, hubOptions{nats: natsURL})
	b := startHub(t, hubOptions{nats: natsURL, dir: a.Dir})
	dc := a.connectDevice(t, a.addDevice(t, "dev1"), device.WebSocket)
	deviceEnded := make(chan error, 1)
	go func() {
		req, err := dc.Accept(context.Background())
		if err != nil {
			return
		}
		conn, err := req.Accept(context.Background())
		if err != nil {
			deviceEnded <- err
			return
		}
		defer conn.Close()
		_, err = io.Copy(conn, conn)
		deviceEnded <- err
	}()
	// Homed on b: the node the service asked.
	conn, err := b.service(t).OpenStream(context.Background(), "dev1", "victim")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoOnce(t, conn, "alive")

	env := cliEnv(a)
	out, stderr, err := runCmd(t, env, tether, "streams")
	if err != nil {
		t.Fatalf("tether streams: %v: %s", err, stderr)
	}
	var id string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 8 && f[1] == "victim" {
			id = f[7]
		}
	}
	if id == "" {
		t.Fatalf("tether streams shows no ID for the stream:\n%s", out)
	}

	// RegistryRead lets one list the streams, not end them.
	reader, err := a.Registry.Policy(context.Background(), "registryRead")
	if err != nil {
		t.Fatal(err)
	}
	readerEnv := []string{"TETHER_HUB=" + sas.ConnectionString{HostName: a.Addr, SharedAccessKeyName: reader.Name, SharedAccessKey: reader.PrimaryKey}.String(), env[1]}
	if _, stderr, err := runCmd(t, readerEnv, tether, "streams", "kill", id); err == nil || !strings.Contains(stderr, "ServiceConnect") {
		t.Errorf("streams kill with registryRead: %v: %s", err, stderr)
	}
	echoOnce(t, conn, "still alive")

	if _, stderr, err := runCmd(t, env, tether, "streams", "kill", id); err != nil {
		t.Fatalf("tether streams kill: %v: %s", err, stderr)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); errors.Is(err, context.DeadlineExceeded) || deadlinePassed(err) {
		t.Fatalf("the service side did not end: %v", err)
	}
	select {
	case <-deviceEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the device side did not end")
	}
	var rec wire.StreamLogProperties
	eventually(t, 10*time.Second, "the killed stream's record", func() bool {
		for _, p := range deviceLogRecords(t, a.service(t), "dev1") {
			if p.StreamID == id {
				rec = p
				return true
			}
		}
		return false
	})
	if rec.ClosedBy != "hub" || rec.CloseReason != "killed by policy iothubowner" || rec.Result != wire.ResultAccepted {
		t.Errorf("the killed stream's record: %+v", rec)
	}
	if host, _, err := net.SplitHostPort(rec.ServiceAddress); err != nil || host != "127.0.0.1" {
		t.Errorf("the record's serviceAddress is %q", rec.ServiceAddress)
	}

	// Gone: a second kill, from either node, finds nothing.
	_, stderr, err = runCmd(t, env, tether, "streams", "kill", id)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(stderr, "no hub node holds an open stream "+id) {
		t.Errorf("killing it again: %v: %s", err, stderr)
	}
	if err := b.service(t).KillStream(context.Background(), id); !errors.Is(err, service.ErrStreamNotFound) {
		t.Errorf("KillStream of an ended stream: %v", err)
	}
}

// deadlinePassed reports whether err is a deadline that passed.
func deadlinePassed(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestForwardWarnsOffLoopback: a forwarder listening where others can
// reach it says so; one on loopback does not.
func TestForwardWarnsOffLoopback(t *testing.T) {
	t.Parallel()
	_, tether := buildBinaries(t)
	h := startHub(t, hubOptions{})
	h.addDevice(t, "dev1")
	env := cliEnv(h)
	// A port free on every address, not only on loopback.
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	for _, tc := range []struct {
		listen string
		warns  bool
	}{
		{"0.0.0.0:" + port, true},
		{":" + port, true},
		{"127.0.0.1:" + port, false},
		{port, false},
	} {
		fwd := startProc(t, env, tether, "forward", "dev1", "ssh", "--listen", tc.listen)
		fwd.waitLine(t, "forwarding", 30*time.Second)
		warned := strings.Contains(fwd.out.String(), "not a loopback address")
		if warned != tc.warns {
			t.Errorf("--listen %s: warned %v, want %v:\n%s", tc.listen, warned, tc.warns, fwd.out.String())
		}
		if err := fwd.stop(t); err != nil {
			t.Errorf("--listen %s: forward exited with %v", tc.listen, err)
		}
	}
}
