package broker

import (
	"testing"
)

// TestDisconnectStale: the broker keeps what Authenticate said each
// session proved, and DisconnectStale drops exactly the sessions whose
// credential the caller calls stale, among the ids given or all of them.
func TestDisconnectStale(t *testing.T) {
	h := startHub(t)
	a := h.dial(t, "devA", dialOpts{})
	h.ev.next(t, "connect devA")
	b := h.dial(t, "devB", dialOpts{ws: true})
	h.ev.next(t, "connect devB")
	c := h.dial(t, "devC", dialOpts{})
	h.ev.next(t, "connect devC")

	if cred, ok := h.b.Credential("devB"); !ok || cred != credential("devB") {
		t.Fatalf("Credential(devB) = %q, %v", cred, ok)
	}
	if _, ok := h.b.Credential("nobody"); ok {
		t.Fatal("a credential for a client id with no session")
	}

	var seen []string
	staleB := func(id, cred string) bool {
		seen = append(seen, id)
		return cred == credential("devB")
	}
	// Limited to devA and devC, devB's credential is not even looked at.
	if n := h.b.DisconnectStale(staleB, "devA", "devC", "nobody"); n != 0 || len(seen) != 2 {
		t.Fatalf("DisconnectStale(devA, devC) = %d, looked at %v", n, seen)
	}
	seen = nil
	if n := h.b.DisconnectStale(staleB); n != 1 || len(seen) != 3 {
		t.Fatalf("DisconnectStale over every session = %d, looked at %v", n, seen)
	}
	b.waitLost(t)
	h.ev.next(t, "disconnect devB")
	if _, ok := h.b.Credential("devB"); ok {
		t.Error("devB's credential outlived its session")
	}
	for _, d := range []*device{a, c} {
		if !d.c.IsConnectionOpen() || !h.b.Connected(d.id) {
			t.Errorf("%s was dropped too", d.id)
		}
	}
}
