package service

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/tether-io/tether/wire"
)

// hangUp plays a hub process that dies with the request in its socket: it
// drops the connection without an answer, with a FIN or with a reset.
func hangUp(t *testing.T, w http.ResponseWriter, reset bool) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	if reset {
		if tc, ok := conn.(*tls.Conn).NetConn().(*net.TCPConn); ok {
			tc.SetLinger(0) // Close sends RST
			tc.Close()
			return
		}
	}
	conn.Close()
}

// A stream request that goes out on a pooled connection the hub has
// dropped is sent again on a new connection, once.
func TestOpenStreamRetriesStaleConnection(t *testing.T) {
	for _, reset := range []bool{false, true} {
		name := "eof"
		if reset {
			name = "reset"
		}
		t.Run(name, func(t *testing.T) {
			f := newFakeHub(t)
			c := f.client(t, Options{NoSessions: true})
			c.twoRequests.Store(true) // the POST's retry, as against Azure's hub
			var posts atomic.Int32
			f.handle(func(w http.ResponseWriter, r *http.Request) {
				if posts.Add(1) == 2 {
					hangUp(t, w, reset)
					return
				}
				w.Header().Set(wire.HeaderIsAccepted, "False")
			})
			// The first request leaves a keep-alive connection in the pool.
			if _, err := c.OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, ErrRejected) {
				t.Fatalf("first request: %v, want ErrRejected", err)
			}
			// The second goes out on it, is dropped, and goes again.
			if _, err := c.OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, ErrRejected) {
				t.Fatalf("request on a dropped connection: %v, want the retry's ErrRejected", err)
			}
			f.mu.Lock()
			conns := f.conn
			f.mu.Unlock()
			if n := posts.Load(); n != 3 || conns != 2 {
				t.Errorf("%d requests on %d connections, want 3 on 2", n, conns)
			}
		})
	}
}

// A hub that hangs up on a new connection is not asked twice: that is an
// answer, not a stale connection.
func TestOpenStreamNoRetryOnFreshConnection(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	var posts atomic.Int32
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		hangUp(t, w, false)
	})
	_, err := c.OpenStream(context.Background(), "dev1", "ssh")
	var he *hubError
	if !errors.As(err, &he) {
		t.Fatalf("err = %v, want a hubError", err)
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("the hub got %d requests, want 1", n)
	}
}

// Without the retry the second request above fails: this checks that the
// test really exercises a stale connection, so it cannot pass vacuously.
func TestStaleConnectionFailsPlainPost(t *testing.T) {
	f := newFakeHub(t)
	c := f.client(t, Options{})
	var posts atomic.Int32
	f.handle(func(w http.ResponseWriter, r *http.Request) {
		if posts.Add(1) == 2 {
			hangUp(t, w, false)
		}
	})
	for i, wantErr := range []bool{false, true} {
		req, err := c.newRequest(context.Background(), "POST", "/twins/dev1/streams/ssh", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = c.do(req)
		if (err != nil) != wantErr {
			t.Fatalf("plain POST %d: err = %v, want error %v", i+1, err, wantErr)
		}
	}
}
