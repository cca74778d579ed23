package broker

import (
	"bytes"
	"log/slog"
	"net"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/wire"
)

// hook is the broker's whole policy inside mochi: who may connect, what
// they may subscribe and publish, and what becomes of a publish.
type hook struct {
	mqtt.HookBase
	b *Broker
}

var provided = []byte{
	mqtt.OnConnect,
	mqtt.OnConnectAuthenticate,
	mqtt.OnACLCheck,
	mqtt.OnSessionEstablish,
	mqtt.OnSessionEstablished,
	mqtt.OnDisconnect,
	mqtt.OnPublish,
}

func (h *hook) ID() string { return "tether-devices" }

func (h *hook) Provides(b byte) bool { return bytes.IndexByte(provided, b) >= 0 }

// sessionOf is the session a client's connection belongs to, or nil for
// a client that did not come through serveConn.
func sessionOf(cl *mqtt.Client) *session {
	if tc, ok := cl.Net.Conn.(*trackedConn); ok {
		return tc.sess
	}
	return nil
}

// sessionConn is the connection under a client's trackedConn (sessionOf
// is non-nil).
func sessionConn(cl *mqtt.Client) net.Conn {
	return cl.Net.Conn.(*trackedConn).Conn
}

// OnConnect drops the client's last will: mochi publishes a will to
// subscribers without an ACL check, so a device could use one to send a
// forged stream request to every device. Before that it refuses a source
// over its limits (admitSource).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if err := h.b.admitSource(cl); err != nil {
		return err
	}
	if pk.Connect.WillFlag {
		h.b.log.Debug("dropping the last will of a device", "client", cl.ID)
		cl.Properties.Will = mqtt.Will{}
	}
	return nil
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if sessionOf(cl) == nil {
		return false
	}
	if pk.Connect.ClientIdentifier == "" {
		// mochi would make one up; a device always names itself.
		h.b.refused(cl, "no client id")
		return false
	}
	s := sessionOf(cl)
	cred, err := h.b.opts.Authenticate(cl.ID, string(pk.Connect.Username), pk.Connect.Password, cl.Net.Remote, peerCertificates(sessionConn(cl)))
	if err != nil {
		h.b.refused(cl, err.Error())
		return false
	}
	h.b.mu.Lock()
	s.credential = cred
	h.b.mu.Unlock()
	return true
}

// refused logs a refused CONNECT, at most a few a second: a misconfigured
// fleet or a scan must not flood the log. Never the password.
func (b *Broker) refused(cl *mqtt.Client, why string) {
	if ok, dropped := b.refusals.allow(); ok {
		b.log.Info("device refused", "client", cl.ID, "remote", cl.Net.Remote, "why", why, "suppressed", dropped)
	}
}

// OnACLCheck allows subscriptions to the two stream filters (or narrower
// filters under them) and publishes of answers; nothing else. It also runs
// for deliveries, which only ever come from mochi's own $SYS topics.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return allowed(topic, write)
}

func allowed(topic string, write bool) bool {
	if write {
		return strings.HasPrefix(topic, wire.TopicResponsePrefix)
	}
	return strings.HasPrefix(topic, wire.TopicRequestPrefix) || strings.HasPrefix(topic, wire.TopicResponsePrefix)
}

func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if s := sessionOf(cl); s != nil {
		h.b.authenticated(s, cl)
	}
}

func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if s := sessionOf(cl); s != nil {
		h.b.established(s)
	}
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if s := sessionOf(cl); s != nil {
		h.b.end(s, err)
	}
}

// OnPublish consumes every publish from a device. CodeSuccessIgnore still
// acknowledges a QoS 1 publish (ErrRejectPacket would not, and the C# SDK
// waits for its PUBACK) but delivers it to nobody: echoing an answer
// breaks the C SDK, and delivering anything would let one device talk to
// another. Only answers reach the ACL-checked path this far; anything else
// is ignored as a second line of defence.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if s := sessionOf(cl); s != nil && strings.HasPrefix(pk.TopicName, wire.TopicResponsePrefix) {
		h.b.answer(s, pk.TopicName)
	}
	return pk, packets.CodeSuccessIgnore
}

// stubListener stands in for the listeners the binary owns. mochi's Close
// asks each listener to close its clients by id.
type stubListener struct{ id string }

func (l stubListener) Init(*slog.Logger) error              { return nil }
func (l stubListener) Serve(listeners.EstablishFn)          {}
func (l stubListener) ID() string                           { return l.id }
func (l stubListener) Address() string                      { return "" }
func (l stubListener) Protocol() string                     { return l.id }
func (l stubListener) Close(closeClients listeners.CloseFn) { closeClients(l.id) }
