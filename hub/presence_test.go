package hub

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/service"
)

// hungRegistry is a presence store that hangs, as a registry whose
// JetStream stopped answering does, until released; then it keeps what
// it is told in memory.
type hungRegistry struct {
	release chan struct{}

	mu      sync.Mutex
	state   map[string]string // client id → "connected SESSION" or "disconnected SESSION"
	writes  map[string]int    // client id → writes
	written chan struct{}     // a token after each write
}

func newHungRegistry() *hungRegistry {
	return &hungRegistry{release: make(chan struct{}), state: map[string]string{}, writes: map[string]int{}, written: make(chan struct{}, 1)}
}

func (r *hungRegistry) record(id, state string) {
	<-r.release
	r.mu.Lock()
	if state != "" {
		r.state[id] = state
	}
	r.writes[id]++
	r.mu.Unlock()
	select {
	case r.written <- struct{}{}:
	default:
	}
}

func (r *hungRegistry) SetConnected(_ context.Context, id, session string, connected bool) error {
	state := "disconnected " + session
	if connected {
		state = "connected " + session
	}
	r.record(id, state)
	return nil
}

func (r *hungRegistry) SetClientConnected(ctx context.Context, id, session, _ string) error {
	return r.SetConnected(ctx, id, session, true)
}

func (r *hungRegistry) Touch(_ context.Context, id, _ string) error {
	r.record(id, "")
	return nil
}

func (r *hungRegistry) RecordTakeovers(_ context.Context, id string, _ int, _, _ string) (int, error) {
	r.record(id, "")
	return 0, nil
}

// A reconnect storm of 10,000 devices meets a registry that hangs: every
// device's session comes up and goes down and up again while not one
// connection state can be written. Stream requests to a device connected
// all along are answered as ever, each well within a second; once the
// registry answers again it gets each device's latest state, once.
func TestReconnectStormWithHungRegistry(t *testing.T) {
	h := startHubNode(t, Options{})
	hung := newHungRegistry()
	released := sync.OnceFunc(func() { close(hung.release) })
	defer released() // whatever fails, the worker and the storm can end
	h.srv.presence.mu.Lock()
	h.srv.presence.store = hung
	h.srv.presence.mu.Unlock()

	svc, err := service.New(h.owner, service.Options{TLSConfig: h.tls})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	d, err := svc.CreateDevice(t.Context(), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	dc, err := device.Dial(t.Context(), svc.DeviceConnectionString(d), device.Options{TLSConfig: h.tls, Transport: device.TLS, MQTTAddress: h.mqtt})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	// dev1 accepts every stream, and closes it.
	go func() {
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				if conn, err := req.Accept(context.Background()); err == nil {
					conn.Close()
				}
			}()
		}
	}()
	// streamAnswered opens a stream to dev1 within a second: the hub asked
	// dev1, it accepted, and both ends joined.
	var (
		streams int
		slowest time.Duration
	)
	streamAnswered := func(when string) {
		t.Helper()
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := svc.OpenStream(ctx, "dev1", "echo")
			if err == nil {
				conn.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("stream to dev1 %s: %v", when, err)
			}
		case <-time.After(time.Second):
			t.Fatalf("stream to dev1 %s: no answer within a second", when)
		}
		streams++
		slowest = max(slowest, time.Since(start))
	}

	streamAnswered("before the storm")

	const devices = 10_000
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("storm-%05d", i)
	}
	stormDone := make(chan struct{})
	go func() {
		defer close(stormDone)
		for _, id := range ids {
			h.srv.deviceConnected(id)
		}
		// Each one's link drops and it comes back.
		for _, id := range ids {
			h.srv.deviceDisconnected(id)
			h.srv.deviceConnected(id)
		}
	}()
	for storming := true; storming; {
		select {
		case <-stormDone:
			storming = false
		default:
			streamAnswered("during the storm")
		}
	}
	streamAnswered("after the storm, the registry still hung")
	t.Logf("%d streams, the slowest answered in %v", streams, slowest.Round(time.Millisecond))

	// What each device's latest state is: its session here.
	want := make(map[string]string, devices+1)
	h.srv.mu.Lock()
	for _, id := range append(ids, "dev1") {
		want[id] = "connected " + h.srv.sessions[id].id
	}
	h.srv.mu.Unlock()

	released()
	deadline := time.After(60 * time.Second)
	for {
		hung.mu.Lock()
		missing := 0
		for id, st := range want {
			if hung.state[id] != st {
				missing++
			}
		}
		hung.mu.Unlock()
		if missing == 0 {
			break
		}
		select {
		case <-hung.written:
		case <-deadline:
			t.Fatalf("%d devices without their latest state a minute after the registry came back", missing)
		}
	}
	hung.mu.Lock()
	defer hung.mu.Unlock()
	for _, id := range ids {
		if n := hung.writes[id]; n != 1 {
			t.Errorf("%s written %d times, want once", id, n)
		}
	}
}

// callLog is a presence store that answers at once and notes each call.
type callLog struct{ calls []string }

func (c *callLog) SetConnected(_ context.Context, id, session string, connected bool) error {
	c.calls = append(c.calls, fmt.Sprintf("%s connected=%v %s", id, connected, session))
	return nil
}

func (c *callLog) SetClientConnected(_ context.Context, id, session, clientType string) error {
	call := fmt.Sprintf("%s connected=true %s", id, session)
	if clientType != "" {
		call += " as " + clientType
	}
	c.calls = append(c.calls, call)
	return nil
}

func (c *callLog) Touch(_ context.Context, id, session string) error {
	c.calls = append(c.calls, fmt.Sprintf("%s touch %s", id, session))
	return nil
}

func (c *callLog) RecordTakeovers(_ context.Context, id string, n int, displaced, by string) (int, error) {
	c.calls = append(c.calls, fmt.Sprintf("%s takeovers=%d %s>%s", id, n, displaced, by))
	return n, nil
}

// What waits for the registry is each device's latest state, written as
// the registry would have ended up after every change one by one: a
// connect replaces what came before it, a session that ended before its
// connect was written is written connected then disconnected, a late
// disconnect of an older session is dropped, activity rides on a connect,
// and takeovers are all counted.
func TestPresenceCoalesces(t *testing.T) {
	for _, c := range []struct {
		name    string
		changes func(q *presenceQueue)
		want    []string
	}{
		{"reconnects", func(q *presenceQueue) {
			q.connected("d", "n/1", "tether-go/0.2.0")
			q.disconnected("d", "n/1")
			q.connected("d", "n/2", "")
			q.disconnected("d", "n/2")
			q.connected("d", "n/3", "tether-go/0.3.0")
		}, []string{"d connected=true n/3 as tether-go/0.3.0"}},
		{"connected and gone", func(q *presenceQueue) {
			q.connected("d", "n/1", "")
			q.disconnected("d", "n/1")
		}, []string{"d connected=true n/1", "d connected=false n/1"}},
		{"gone", func(q *presenceQueue) {
			q.touched("d", "n/1")
			q.disconnected("d", "n/1")
		}, []string{"d connected=false n/1"}},
		{"late disconnect of an older session", func(q *presenceQueue) {
			q.connected("d", "n/2", "")
			q.disconnected("d", "n/1")
		}, []string{"d connected=true n/2"}},
		{"activity after a connect", func(q *presenceQueue) {
			q.connected("d", "n/1", "")
			q.touched("d", "n/1")
		}, []string{"d connected=true n/1"}},
		{"activity", func(q *presenceQueue) {
			q.touched("d", "n/1")
			q.touched("d", "n/1")
		}, []string{"d touch n/1"}},
		{"takeovers", func(q *presenceQueue) {
			q.takenOver("d", takeover{displaced: "a:1", by: "b:2"})
			q.connected("d", "n/2", "")
			q.takenOver("d", takeover{displaced: "b:2", by: "a:3"})
			q.connected("d", "n/3", "")
			q.touched("d", "n/3")
		}, []string{"d connected=true n/3", "d takeovers=2 b:2>a:3"}},
		{"devices in the order they changed first", func(q *presenceQueue) {
			q.connected("b", "n/1", "")
			q.connected("a", "n/2", "")
			q.disconnected("b", "n/1")
			q.connected("b", "n/3", "")
		}, []string{"b connected=true n/3", "a connected=true n/2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Server{log: slog.New(slog.DiscardHandler)}
			log := &callLog{}
			q := newPresenceQueue(log)
			c.changes(q)
			q.close()
			q.connected("d", "n/9", "") // after Close: dropped
			for {
				id, p, store, ok := q.next()
				if !ok {
					break
				}
				s.writePresence(store, id, p)
			}
			if !slices.Equal(log.calls, c.want) {
				t.Fatalf("written:\n%s\nwant:\n%s", strings.Join(log.calls, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}
