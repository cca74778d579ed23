package broker

import (
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/wire"
)

// noticeTimeout bounds writing the takeover notice. The new connection's
// CONNACK waits for it, and a displaced connection that does not take a
// few dozen bytes at once is dead or stalled: it is dropped all the same.
const noticeTimeout = time.Second

// takenOver tells the displaced session old that the connection from by
// replaced it, if old is Tether's device SDK, and reports the takeover
// (Options.OnTakeover). Dropping old is the caller's part: mochi's for a
// takeover here, TakeOver's for one on another node.
//
// An Azure SDK is told nothing: it sees what Azure IoT Hub would send it
// (wire.TopicTakenOver is Tether's own topic, which it never subscribed
// to).
func (b *Broker) takenOver(old *session, by string) {
	if old.tether {
		// QoS 0 and straight to this one connection, as a stream request.
		// A stalled write is cut by stopping the client, which closes the
		// connection under the writer holding its lock.
		t := time.AfterFunc(noticeTimeout, func() { old.cl.Stop(packets.ErrSessionTakenOver) })
		err := old.cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish},
			TopicName:   wire.TakenOverTopic(by),
		})
		t.Stop()
		if err != nil {
			b.log.Debug("telling a device its session was taken over", "client", old.id, "err", err)
		}
	}
	if b.opts.OnTakeover != nil {
		b.opts.OnTakeover(old.id, old.cl.Net.Remote, by)
	}
}

// TakeOver drops clientID's session here for a newer connection with the
// same client id elsewhere (another hub node), from remote address by: as
// a takeover here, Tether's device SDK is told why and OnTakeover reports
// it. It does not wait for the session to end.
func (b *Broker) TakeOver(clientID, by string) {
	b.mu.Lock()
	s := b.current[clientID]
	displaced := s != nil && s.up && !s.ended
	b.mu.Unlock()
	if s == nil {
		return
	}
	if displaced {
		b.takenOver(s, by)
	}
	s.cl.Stop(packets.ErrSessionTakenOver)
}

// Remote is the remote address of clientID's session here, or "" if it
// has none.
func (b *Broker) Remote(clientID string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.current[clientID]; s != nil {
		return s.cl.Net.Remote
	}
	return ""
}
