package device

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The device needs a small part of MQTT 3.1.1: CONNECT, one SUBSCRIBE,
// QoS 0 publishes both ways and keep-alive pings. A general client (paho)
// linked net/http, gorilla/websocket and x/net/proxy into every agent and
// ran six goroutines per connection; on a device, where the agent idles
// for months, its code alone was 0.4 MiB of resident memory.

// MQTT 3.1.1 packet types, shifted into the fixed header's high nibble.
const (
	pktConnect     = 1 << 4
	pktConnack     = 2 << 4
	pktPublish     = 3 << 4
	pktPuback      = 4 << 4
	pktSubscribe   = 8 << 4
	pktSuback      = 9 << 4
	pktPingreq     = 12 << 4
	pktPingresp    = 13 << 4
	pktDisconnect  = 14 << 4
	subscribeFlags = 0x02 // reserved bits MQTT 3.1.1 requires on SUBSCRIBE
)

// CONNACK return codes a hub refuses a device with.
const (
	connackServerUnavailable = 3
	connackBadCredentials    = 4
	connackNotAuthorized     = 5
)

// maxPacket bounds a packet from the hub. Its stream requests are a topic
// of a few hundred bytes; anything near this is a broken peer, and
// allocating what it announces would let it take the device's memory.
const maxPacket = 1 << 20

var errPingTimeout = errors.New("pingresp not received, disconnecting")

// errHubDisconnect is a DISCONNECT from the hub. MQTT 3.1.1 gives a server
// none to send, but some send one before they close (mochi on a takeover),
// and "the hub ended the session" says more than the EOF that follows.
var errHubDisconnect = errors.New("the hub ended the session (DISCONNECT)")

// connackError is a CONNACK that refused the connection.
type connackError byte

func (e connackError) Error() string {
	switch e {
	case 1:
		return "connection refused: unacceptable protocol version"
	case 2:
		return "connection refused: identifier rejected"
	case connackServerUnavailable:
		return "connection refused: server unavailable"
	case connackBadCredentials:
		return "connection refused: bad user name or password"
	case connackNotAuthorized:
		return "connection refused: not authorised"
	default:
		return fmt.Sprintf("connection refused: return code %d", byte(e))
	}
}

// mqttConn is one MQTT connection of a device: a reader goroutine and a
// keep-alive goroutine, started once the hub accepted the CONNECT. Writes
// from any goroutine go out whole, one at a time.
type mqttConn struct {
	conn        net.Conn
	br          *bufio.Reader
	keepAlive   time.Duration
	pingTimeout time.Duration
	onPublish   func(topic string)
	onLost      func(error)   // not called after disconnect
	later       <-chan string // see mqttOptions

	wmu sync.Mutex

	lastSent, lastRecv atomic.Int64 // UnixNano
	pingSent           atomic.Int64 // UnixNano of the unanswered PINGREQ; 0 if none
	suback             chan []byte  // the SUBACK's return codes

	done     chan struct{} // closed when the connection ends, either way
	stopOnce sync.Once
	closing  atomic.Bool // disconnect was called: the end is not a loss
	wg       sync.WaitGroup
}

// mqttOptions is what a CONNECT says and how the connection is kept.
type mqttOptions struct {
	clientID, username, password string
	keepAlive, pingTimeout       time.Duration
	onPublish                    func(topic string)
	onLost                       func(error)
	// later holds topics to publish (empty, QoS 0) that onPublish must not
	// wait to write, since it runs on the reader: the keep-alive goroutine
	// writes them, and disconnect what is left before its DISCONNECT. A
	// peer that stops reading then stalls that goroutine, never the
	// reader. The caller bounds it and sends without blocking.
	later <-chan string
}

// mqttConnect sends CONNECT on conn and waits for the CONNACK, within ctx's
// deadline; a refusal is a connackError. On success the connection runs
// until disconnect or a loss reported to o.onLost.
func mqttConnect(ctx context.Context, conn net.Conn, o mqttOptions) (*mqttConn, error) {
	m := &mqttConn{
		conn:        conn,
		br:          bufio.NewReaderSize(conn, 512),
		keepAlive:   o.keepAlive,
		pingTimeout: o.pingTimeout,
		onPublish:   o.onPublish,
		onLost:      o.onLost,
		later:       o.later,
		suback:      make(chan []byte, 1),
		done:        make(chan struct{}),
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	flags := byte(0x80 | 0x02) // user name, clean session
	if o.password != "" {
		flags |= 0x40
	}
	var b []byte
	b = appendString(b, "MQTT")
	b = append(b, 4, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(min(o.keepAlive/time.Second, 0xffff)))
	b = appendString(b, o.clientID)
	b = appendString(b, o.username)
	if o.password != "" {
		b = appendString(b, o.password)
	}
	if _, err := conn.Write(appendPacket(nil, pktConnect, b)); err != nil {
		return nil, err
	}
	typ, body, err := m.readPacket()
	if err != nil {
		return nil, err
	}
	if typ&0xf0 != pktConnack || len(body) != 2 {
		return nil, fmt.Errorf("expected CONNACK, got packet type %d", typ>>4)
	}
	if body[1] != 0 {
		return nil, connackError(body[1])
	}
	conn.SetDeadline(time.Time{})
	now := time.Now().UnixNano()
	m.lastSent.Store(now)
	m.lastRecv.Store(now)
	m.wg.Add(2)
	go m.readLoop()
	go m.keepAliveLoop()
	return m, nil
}

// subscribe subscribes to filters at QoS 0 and returns the SUBACK's
// return codes, one per filter.
func (m *mqttConn) subscribe(ctx context.Context, filters ...string) ([]byte, error) {
	b := binary.BigEndian.AppendUint16(nil, 1) // the only packet id in flight
	for _, f := range filters {
		b = append(appendString(b, f), 0)
	}
	if err := m.write(appendPacket(nil, pktSubscribe|subscribeFlags, b), answerTimeout); err != nil {
		return nil, err
	}
	select {
	case codes := <-m.suback:
		return codes, nil
	case <-m.done:
		return nil, errors.New("connection closed before SUBACK")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// publish sends an empty QoS 0 message, giving up after timeout (or at
// ctx's deadline, if sooner).
func (m *mqttConn) publish(ctx context.Context, topic string, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	return m.write(publishPacket(nil, topic), timeout)
}

// publishPacket appends an empty QoS 0 PUBLISH to topic.
func publishPacket(b []byte, topic string) []byte {
	return appendPacket(b, pktPublish, appendString(nil, topic))
}

// write sends one packet. A write that fails or times out leaves the
// connection unusable, so it is a loss.
func (m *mqttConn) write(p []byte, timeout time.Duration) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	select {
	case <-m.done:
		return net.ErrClosed
	default:
	}
	m.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := m.conn.Write(p)
	m.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		m.stop(err)
		return err
	}
	m.lastSent.Store(time.Now().UnixNano())
	return nil
}

// disconnect sends DISCONNECT, waiting at most quiesce for it to leave, so
// that the hub marks the device offline at once; then closes the
// connection and waits for its goroutines.
func (m *mqttConn) disconnect(quiesce time.Duration) {
	m.closing.Store(true)
	if quiesce > 0 {
		m.write(append(m.takeLater(), pktDisconnect, 0), quiesce)
	}
	m.stop(nil)
	m.wg.Wait()
}

// takeLater returns what waits in later as PUBLISH packets, in order.
func (m *mqttConn) takeLater() []byte {
	var b []byte
	for {
		select {
		case topic := <-m.later:
			b = publishPacket(b, topic)
		default:
			return b
		}
	}
}

// stop ends the connection once; err, if the connection was not being
// disconnected, is reported as the loss.
func (m *mqttConn) stop(err error) {
	m.stopOnce.Do(func() {
		close(m.done)
		m.conn.Close()
		if err != nil && !m.closing.Load() && m.onLost != nil {
			m.onLost(err)
		}
	})
}

func (m *mqttConn) readLoop() {
	defer m.wg.Done()
	for {
		typ, body, err := m.readPacket()
		if err != nil {
			m.stop(err)
			return
		}
		m.lastRecv.Store(time.Now().UnixNano())
		switch typ & 0xf0 {
		case pktPublish:
			topic, id, err := parsePublish(typ, body)
			if err != nil {
				m.stop(err)
				return
			}
			if typ&0x06 == 0x02 { // QoS 1, though the subscription asked for 0
				if err := m.write(appendPacket(nil, pktPuback, binary.BigEndian.AppendUint16(nil, id)), answerTimeout); err != nil {
					return
				}
			}
			m.onPublish(topic)
		case pktSuback:
			if len(body) >= 2 {
				select {
				case m.suback <- body[2:]:
				default:
				}
			}
		case pktPingresp:
			m.pingSent.Store(0)
		case pktDisconnect:
			m.stop(errHubDisconnect)
			return
		}
	}
}

// keepAliveLoop pings once nothing was sent or received for keepAlive, and
// ends the connection when a ping goes unanswered for pingTimeout: a link
// that a NAT or balancer dropped without a FIN is noticed by no read. It
// also writes what the reader left for later.
func (m *mqttConn) keepAliveLoop() {
	defer m.wg.Done()
	t := time.NewTimer(m.keepAlive)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case topic := <-m.later:
			if err := m.write(publishPacket(nil, topic), answerTimeout); err != nil {
				return
			}
			continue
		case <-t.C:
		}
		now := time.Now()
		if p := m.pingSent.Load(); p != 0 {
			if wait := time.Unix(0, p).Add(m.pingTimeout).Sub(now); wait > 0 {
				t.Reset(wait)
				continue
			}
			m.stop(errPingTimeout)
			return
		}
		quiet := time.Unix(0, min(m.lastSent.Load(), m.lastRecv.Load()))
		if wait := quiet.Add(m.keepAlive).Sub(now); wait > 0 {
			t.Reset(wait)
			continue
		}
		m.pingSent.Store(now.UnixNano())
		if err := m.write([]byte{pktPingreq, 0}, m.pingTimeout); err != nil {
			return
		}
		t.Reset(m.pingTimeout)
	}
}

// readPacket reads one packet: its first header byte and its body.
func (m *mqttConn) readPacket() (byte, []byte, error) {
	typ, err := m.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		c, err := m.br.ReadByte()
		if err != nil {
			return 0, nil, unexpectedEOF(err)
		}
		n += int(c&0x7f) * mul
		if c&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed MQTT remaining length")
		}
		mul <<= 7
	}
	if n > maxPacket {
		return 0, nil, fmt.Errorf("MQTT packet of %d bytes from the hub, more than %d", n, maxPacket)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(m.br, body); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return typ, body, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parsePublish returns a PUBLISH's topic and, at QoS 1 or 2, its packet id.
func parsePublish(typ byte, body []byte) (string, uint16, error) {
	if len(body) < 2 {
		return "", 0, errors.New("malformed MQTT PUBLISH")
	}
	n := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+n {
		return "", 0, errors.New("malformed MQTT PUBLISH")
	}
	topic, rest := string(body[2:2+n]), body[2+n:]
	if typ&0x06 == 0 {
		return topic, 0, nil
	}
	if len(rest) < 2 {
		return "", 0, errors.New("malformed MQTT PUBLISH")
	}
	return topic, binary.BigEndian.Uint16(rest), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendPacket appends a packet of the given first header byte and body.
func appendPacket(b []byte, typ byte, body []byte) []byte {
	b = append(b, typ)
	n := len(body)
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			break
		}
	}
	return append(b, body...)
}
