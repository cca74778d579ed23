package broker

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/wire"
)

// FuzzClientTopic feeds device-chosen topics to the ACL and to the answer
// path: nothing panics, the ACL admits only the stream topics, every
// publish is consumed, and only a well-formed answer carrying the pending
// rid resolves the request.
func FuzzClientTopic(f *testing.F) {
	for _, s := range []string{
		"", "#", "+", "$iothub/streams/res/", "$iothub/streams/res/200/?$rid=RID",
		"$iothub/streams/res/400/?$rid=RID&x=y", "$iothub/streams/res/200/?$rid=",
		"$iothub/streams/res/2000/?$rid=RID", "$iothub/streams/res/-1/?$rid=RID",
		"$iothub/streams/POST/ssh/?$rid=1&$url=x&$auth=y", "$iothub/streams/POST/#",
		"$share/g/$iothub/streams/res/#", "$iothub/streams/res/200/?$rid=RID&$rid=other",
		"$iothub/streams/res/\xff/?$rid=RID", "$iothub/streams/res/200/?$rid=RID\x00",
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	b, err := New(Options{Authenticate: func(string, string, []byte, string, []*x509.Certificate) (string, error) { return "", errors.New("no") }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	h := &hook{b: b}
	s := &session{id: "dev", gone: make(chan struct{})}
	cl := &mqtt.Client{ID: "dev", Net: mqtt.ClientConnection{Conn: &trackedConn{sess: s}}}

	f.Fuzz(func(t *testing.T, topic string, write bool) {
		if h.OnACLCheck(cl, topic, write) {
			ok := strings.HasPrefix(topic, wire.TopicResponsePrefix) ||
				!write && strings.HasPrefix(topic, wire.TopicRequestPrefix)
			if !ok {
				t.Fatalf("ACL admitted %q (write %v)", topic, write)
			}
		}

		const rid = "RID"
		p := &pendingReq{sess: s, answer: make(chan int, 1)}
		b.mu.Lock()
		b.pending[rid] = p
		b.mu.Unlock()
		defer func() {
			b.mu.Lock()
			delete(b.pending, rid)
			b.mu.Unlock()
		}()

		if _, err := h.OnPublish(cl, packets.Packet{TopicName: topic}); !errors.Is(err, packets.CodeSuccessIgnore) {
			t.Fatalf("OnPublish(%q) = %v, want CodeSuccessIgnore", topic, err)
		}
		select {
		case status := <-p.answer:
			st, r, err := wire.ParseResponse(topic)
			if err != nil || r != rid || st != status || status < 100 || status > 999 {
				t.Fatalf("%q resolved the request with %d (parse: %d %q %v)", topic, status, st, r, err)
			}
		default:
		}
	})
}
