// Package natstest runs a NATS server on loopback for a test, standing in
// for the external NATS system a hub of several nodes may use. It is for
// tests only, and the one place they start such a server.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Run runs a NATS server with o until the test ends, its address (127.0.0.1,
// a free port), its store (a folder of the test's) and its quiet fields
// filled in, and returns it once it takes connections. A nil o runs one
// with JetStream.
func Run(t testing.TB, o *server.Options) *server.Server {
	t.Helper()
	if o == nil {
		o = &server.Options{JetStream: true}
	}
	o.Host, o.Port, o.StoreDir, o.NoSigs, o.NoLog = "127.0.0.1", server.RANDOM_PORT, t.TempDir(), true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("test NATS server not ready")
	}
	return s
}
