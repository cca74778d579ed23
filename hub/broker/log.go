package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// demoteHandler logs mochi's Info and Warn records at Debug. mochi warns
// about every misbehaving client and announces its own start-up at Info;
// for the hub those are per-connection noise, and the broker logs what
// matters itself.
type demoteHandler struct{ h slog.Handler }

func demote(l slog.Level) slog.Level {
	if l < slog.LevelError {
		return slog.LevelDebug
	}
	return l
}

func (d demoteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, demote(l))
}

func (d demoteHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return d.h.Handle(ctx, r)
}

func (d demoteHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return demoteHandler{d.h.WithAttrs(as)}
}

func (d demoteHandler) WithGroup(name string) slog.Handler {
	return demoteHandler{d.h.WithGroup(name)}
}

// sampler lets through at most perSecond events a second and counts the
// rest, so a log line can say how many it stands for.
type sampler struct {
	mu      sync.Mutex
	second  int64
	n       int
	dropped int
}

const perSecond = 10

// allow reports whether to log this event and how many were suppressed
// since the last one logged.
func (s *sampler) allow() (ok bool, dropped int) {
	now := time.Now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now != s.second {
		s.second, s.n = now, 0
	}
	if s.n >= perSecond {
		s.dropped++
		return false, 0
	}
	s.n++
	dropped, s.dropped = s.dropped, 0
	return true, dropped
}
