package hub

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logLimiter lets through at most burst lines per interval for one kind of
// event and counts the rest, so that a flood (a thousand failed logins a
// second from one address) costs a few log lines, and the next line that
// passes says how many were held back.
type logLimiter struct {
	interval time.Duration
	burst    int

	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

func newLogLimiter(burst int, interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, burst: burst}
}

// allow reports whether a line may be written now, and how many were
// held back since the last one that was.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.interval {
		l.start, l.n = now, 0
	}
	if l.n >= l.burst {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// log writes msg at level through log when the limiter allows it.
func (l *logLimiter) log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	ok, suppressed := l.allow(time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	log.Log(context.Background(), level, msg, args...)
}
