package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/hub/streamlog"
	"github.com/tether-io/tether/wire"
)

// invocation is what the hub knows of one stream request, from the REST
// call to the stream's end, for its log record.
type invocation struct {
	deviceID, module, name string
	policy, sdk            string
	start                  time.Time
	streamID               string // set once the relay opened the stream
	remote                 string // the service's address: the request's RemoteAddr
	key                    string // fingerprint of the policy key that asked (keys.go)
	epoch                  uint64 // key changes seen before the policy was read (keys.go)

	open *streamlog.Pending // its entry in the open-stream journal (interrupted.go)
	// devStatus, when set, is the device's status being read while the
	// policy was (readStatus): createStream waits for it in place of
	// reading it after.
	devStatus *statusRead

	mu       sync.Mutex // answer may race the relay's end of the stream
	status   int
	result   string
	answered time.Time
}

func (inv *invocation) answer(status int, result string) {
	inv.mu.Lock()
	inv.status, inv.result, inv.answered = status, result, time.Now()
	inv.mu.Unlock()
}

// track remembers inv until the relay reports its stream done.
func (s *Server) track(inv *invocation) {
	s.journalBegin(inv)
	s.invMu.Lock()
	s.invocations[inv.streamID] = inv
	s.invMu.Unlock()
}

// streamDone is the relay's report of a stream's end: the moment to write
// the invocation's record, with the bytes and the lifetime.
func (s *Server) streamDone(info relay.Info) {
	s.invMu.Lock()
	inv := s.invocations[info.ID]
	delete(s.invocations, info.ID)
	s.invMu.Unlock()
	if inv == nil {
		// Opened by a hub that did not track it; record what the relay knows.
		inv = &invocation{deviceID: info.DeviceID, name: info.Name, start: info.Opened, streamID: info.ID}
	}
	s.logInvocation(inv, &info)
}

// logInvocation writes the record of inv (with the relay's account when the
// stream was opened) to the stream logs and to the hub's log. No token,
// key or signature is in it.
func (s *Server) logInvocation(inv *invocation, info *relay.Info) {
	inv.mu.Lock()
	status, result, answered := inv.status, inv.result, inv.answered
	inv.mu.Unlock()
	if result == "" {
		// The relay ended the stream before the device answered (the window
		// was shorter than the response timeout, or the hub closed).
		result, status = wire.ResultTimedOut, http.StatusGatewayTimeout
	}
	if answered.IsZero() {
		answered = time.Now()
	}
	p := wire.StreamLogProperties{
		DeviceID: inv.deviceID, ModuleID: inv.module, SDKVersion: inv.sdk,
		StatusCode: status, RequestName: inv.name, Direction: "c2d",
		StreamID: inv.streamID, Result: result, Policy: inv.policy, Node: s.node,
		SetupMs: answered.Sub(inv.start).Milliseconds(), ServiceAddress: inv.remote,
	}
	end := answered
	success := result == wire.ResultAccepted
	desc := map[string]string{
		wire.ResultAccepted: "stream accepted by the device",
		wire.ResultRejected: "stream rejected by the device",
		wire.ResultOffline:  "device not online",
		wire.ResultTimedOut: "timed out waiting for the device's answer",
		wire.ResultError:    "stream request failed",
	}[result]
	if status == http.StatusNotFound && result == wire.ResultError {
		desc = "device not registered"
	}
	if info != nil {
		p.BytesToDevice, p.BytesToService = info.BytesToDevice, info.BytesToService
		p.ClosedBy, p.CloseReason = info.ClosedBy, info.Reason
		p.Recorded = info.Recorded
		end = info.Closed
		if info.PairedOK {
			p.SetupMs = info.Paired.Sub(inv.start).Milliseconds()
			p.LifetimeMs = info.Closed.Sub(info.Paired).Milliseconds()
		} else if success {
			// Accepted, but one side never joined.
			success = false
			desc = "accepted, but a side never joined: " + info.Reason
		}
	}
	s.metrics.streamEnded(result, inv.start, info)
	props, _ := json.Marshal(p)
	rec := wire.StreamLog{
		Time: inv.start.UTC(), OperationName: "invoke", Category: "DeviceStreams",
		ResultType: "Success", ResultDescription: desc, Level: "Information",
		DurationMs: end.Sub(inv.start).Milliseconds(), Properties: string(props),
	}
	if !success {
		rec.ResultType, rec.Level = "Failure", "Error"
	}
	s.log.Info("stream", "device", inv.deviceID, "stream", inv.name, "id", inv.streamID, "result", result,
		"policy", inv.policy, "service", inv.remote, "status", status, "setupMs", p.SetupMs, "lifetimeMs", p.LifetimeMs,
		"bytesToDevice", p.BytesToDevice, "bytesToService", p.BytesToService,
		"closedBy", p.ClosedBy, "reason", p.CloseReason)
	ctx, cancel := ctxTimeout(context.Background())
	defer cancel()
	if err := s.logs.Append(ctx, inv.deviceID, rec); err != nil {
		s.log.Warn("writing a stream log record", "device", inv.deviceID, "err", err)
		return // its journal entry stays: the next start records it
	}
	s.journalEnd(ctx, inv)
}

// maxLast bounds ?last=: a reader that wants more reads a window.
const maxLast = 100_000

// handleStreamLogs serves GET
// /streamlogs?deviceId=&since=&after=&last=&follow=: the records as JSON
// lines, oldest first, each with its sequence; with follow, new ones as
// they come until the client goes away or the node drains (the follower
// resumes on another node, or on this one once restarted, with ?after=).
func (s *Server) handleStreamLogs(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	dev, ok := s.deviceQuery(w, r)
	if !ok {
		return
	}
	q, err := logQuery(r.URL.Query(), time.Now())
	if err != nil {
		s.badRequest(w, r, err)
		return
	}
	q.DeviceID = dev
	ctx := r.Context()
	if q.Follow && s.Draining() {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, wire.CodeServerError, "this hub node is shutting down; follow the stream logs again in a moment")
		return
	}
	if q.Follow {
		var cancel context.CancelFunc
		ctx, cancel = s.follow.context(ctx)
		defer cancel()
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush() // a follower knows at once that it is connected
	}
	enc := json.NewEncoder(w)
	err = s.logs.Read(ctx, q, func(rec wire.StreamLog) error {
		if err := enc.Encode(rec); err != nil {
			return err
		}
		if flusher != nil && q.Follow {
			flusher.Flush()
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("reading stream logs", "err", err)
	}
}

// logQuery reads the query of GET /streamlogs but the device.
func logQuery(v url.Values, now time.Time) (streamlog.Query, error) {
	var q streamlog.Query
	if s := v.Get("since"); s != "" {
		t, err := parseSince(s, now)
		if err != nil {
			return q, err
		}
		q.Since = t
	}
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return q, fmt.Errorf("after: %q is not a record's sequence number", s)
		}
		q.After = n
	}
	if s := v.Get("last"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLast {
			return q, fmt.Errorf("last: %q is not a number of records from 1 to %d", s, maxLast)
		}
		q.Last = n
	}
	switch f := v.Get("follow"); f {
	case "", "false":
	case "true":
		q.Follow = true
	default:
		return q, fmt.Errorf("follow: %q is neither true nor false", f)
	}
	return q, nil
}

// followers ends the stream-log followers of a node that drains: they
// are no work to wait for, and once told they resume elsewhere. The zero
// value is ready.
type followers struct {
	mu     sync.Mutex
	ctx    context.Context // ended by end; made on first use
	cancel context.CancelFunc
}

func (f *followers) all() context.Context {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx == nil {
		f.ctx, f.cancel = context.WithCancel(context.Background())
	}
	return f.ctx
}

// context returns a context of parent that also ends with end.
func (f *followers) context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(f.all(), cancel)
	return ctx, func() { stop(); cancel() }
}

// end ends every follower, now and to come.
func (f *followers) end() {
	f.all()
	f.cancel()
}

// parseSince reads an RFC 3339 time or a duration back from now ("15m").
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(strings.TrimSpace(v)); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("since: %q is neither a duration (15m) nor an RFC 3339 time", v)
}
