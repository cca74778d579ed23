package hub

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/tether-io/tether/hub/streamlog"
	"github.com/tether-io/tether/wire"
)

// The open-stream journal keeps an entry for each stream open on this
// node, from the moment the relay opens it (track) to its stream-log
// record (logInvocation), so that a node killed without a word leaves
// what its next start needs to record the streams it had open as
// interrupted: the stream logs then have no hole. See docs/operations.md.

// journalLog limits the lines of entries that could not be sent: with
// NATS down every stream opened would say so. One limiter for the
// process is enough, as a node is one per process but in tests.
var journalLog = newLogLimiter(1, time.Minute)

// journalBegin sends inv's entry to the journal. It does not wait for the
// store: the stream's setup pays for one message sent.
func (s *Server) journalBegin(inv *invocation) {
	p, err := s.journal.Begin(streamlog.Entry{
		Node: s.node, StreamID: inv.streamID, DeviceID: inv.deviceID, ModuleID: inv.module,
		Name: inv.name, Policy: inv.policy, SDK: inv.sdk, Service: inv.remote, Start: inv.start,
	})
	if err != nil {
		journalLog.log(s.log, slog.LevelWarn, "journaling an open stream: should this node die, the stream's record would be missing", "stream", inv.streamID, "err", err)
	}
	inv.open = p
}

// journalEnd removes inv's entry once its record is written.
func (s *Server) journalEnd(ctx context.Context, inv *invocation) {
	if err := inv.open.End(ctx); err != nil {
		s.log.Warn("removing an ended stream from the open-stream journal: the next start will record it as interrupted", "stream", inv.streamID, "err", err)
	}
}

// recordInterrupted writes the records of the streams an earlier run of
// this node left open when it died (a result of interrupted), before this
// run opens any stream.
func (s *Server) recordInterrupted() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := s.journal.Recover(ctx, s.logs, s.node, s.interruptedRecord)
	if err != nil {
		s.log.Warn("recording the streams an earlier run left open", "recorded", n, "err", err)
	}
	if n > 0 {
		s.log.Info("recorded the streams an earlier run left open as interrupted", "streams", n)
		s.metrics.streams.WithLabelValues(wire.ResultInterrupted).Add(float64(n))
	}
}

// interruptedRecord is the stream-log record of a stream whose node died
// while it was open: what the journal kept, the rest unknown.
func (s *Server) interruptedRecord(e streamlog.Entry) wire.StreamLog {
	p := wire.StreamLogProperties{
		DeviceID: e.DeviceID, ModuleID: e.ModuleID, SDKVersion: e.SDK, RequestName: e.Name,
		Direction: "c2d", StreamID: e.StreamID, Result: wire.ResultInterrupted, Policy: e.Policy,
		Node: e.Node, ServiceAddress: e.Service, ClosedBy: "hub",
		CloseReason: "node " + e.Node + " stopped while the stream was open; recorded by " + s.node,
	}
	props, _ := json.Marshal(p)
	s.log.Info("stream", "device", e.DeviceID, "stream", e.Name, "id", e.StreamID, "result", wire.ResultInterrupted,
		"policy", e.Policy, "service", e.Service, "node", e.Node)
	return wire.StreamLog{
		Time: e.Start.UTC(), OperationName: "invoke", Category: "DeviceStreams",
		ResultType: "Failure", Level: "Error", Properties: string(props),
		ResultDescription: "interrupted: the hub node stopped while the stream was open; its bytes and lifetime are unknown",
	}
}
