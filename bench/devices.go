package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wstest"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// DeviceSim connects many idle devices from one process. Each is a raw
// MQTT 3.1.1 session (CONNECT, SUBSCRIBE to the stream topics as the SDK
// does, then silence): no paho client and no goroutine per device here,
// so the simulator's own cost does not limit N.
type DeviceSim struct {
	Host     string      // the hub's host name, for tokens and usernames
	MQTTAddr string      // MQTT over TLS host:port
	WSURL    string      // wss://host:port/$iothub/websocket
	TLS      *tls.Config // trusts the hub's CA
	// KeyName and Key sign the devices' tokens: a policy holding
	// DeviceConnect, so that 10,000 devices need no 10,000 keys.
	KeyName, Key string
	// SourceIPs spread the connections over several loopback addresses:
	// one source address has only ~28,000 ephemeral ports.
	SourceIPs []net.IP
	// KeepAlive is the MQTT keep-alive announced: longer than the test, as
	// nobody answers pings here.
	KeepAlive time.Duration
}

// ConnectAll connects the devices ids, conc at a time, over MQTT/TLS or
// MQTT/WebSocket, and returns the open connections (nil where it failed)
// and the number of failures. Every attempt is bounded by a 30 s deadline.
func (s *DeviceSim) ConnectAll(ctx context.Context, ids []string, useWS bool, conc int) ([]net.Conn, int, error) {
	conns := make([]net.Conn, len(ids))
	var (
		next    atomic.Int64
		failed  atomic.Int64
		lastErr atomic.Value
		wg      sync.WaitGroup
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(ids) {
					return
				}
				c, err := s.connect(ctx, ids[i], i, useWS)
				if err != nil {
					failed.Add(1)
					lastErr.Store(err)
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	err, _ := lastErr.Load().(error)
	return conns, int(failed.Load()), err
}

func (s *DeviceSim) connect(ctx context.Context, id string, i int, useWS bool) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nd := &net.Dialer{}
	if len(s.SourceIPs) > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: s.SourceIPs[i%len(s.SourceIPs)]}
	}
	var (
		conn net.Conn
		rw   io.ReadWriter
		err  error
	)
	if useWS {
		d := ws.Dialer{
			TLSConfig: s.TLS,
			Protocols: []string{wire.SubprotocolMQTT},
			NetDial:   nd.DialContext,
		}
		var br *bufio.Reader
		conn, br, _, err = d.Dial(ctx, s.WSURL)
		if err != nil {
			return nil, err
		}
		var src io.Reader = conn
		if br != nil {
			src = io.MultiReader(br, conn)
		}
		rw = &wsStream{w: conn, r: src}
	} else {
		td := tls.Dialer{NetDialer: nd, Config: s.TLS}
		conn, err = td.DialContext(ctx, "tcp", s.MQTTAddr)
		if err != nil {
			return nil, err
		}
		rw = conn
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := s.handshake(rw, id); err != nil {
		conn.Close()
		return nil, fmt.Errorf("device %s: %w", id, err)
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// handshake does what the device SDK does on connect: CONNECT with a SAS
// token, then SUBSCRIBE to stream requests and answers.
func (s *DeviceSim) handshake(rw io.ReadWriter, id string) error {
	tok, err := sas.New(s.Host+"/devices/"+id, s.Key, s.KeyName, time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession = true
	cp.ClientIdentifier = id
	cp.UsernameFlag, cp.Username = true, s.Host+"/"+id+"/?api-version="+wire.APIVersion
	cp.PasswordFlag, cp.Password = true, []byte(tok)
	cp.Keepalive = uint16(min(s.KeepAlive/time.Second, 65535))
	if err := writePacket(rw, cp); err != nil {
		return err
	}
	p, err := packets.ReadPacket(rw)
	if err != nil {
		return fmt.Errorf("reading CONNACK: %w", err)
	}
	ca, ok := p.(*packets.ConnackPacket)
	if !ok || ca.ReturnCode != 0 {
		return fmt.Errorf("CONNACK: %v", p)
	}
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID = 1
	sp.Topics = []string{wire.TopicRequestFilter, wire.TopicResponseFilter}
	sp.Qoss = []byte{0, 0}
	if err := writePacket(rw, sp); err != nil {
		return err
	}
	p, err = packets.ReadPacket(rw)
	if err != nil {
		return fmt.Errorf("reading SUBACK: %w", err)
	}
	if _, ok := p.(*packets.SubackPacket); !ok {
		return fmt.Errorf("expected SUBACK, got %v", p)
	}
	return nil
}

// writePacket sends a packet in one Write: one TLS record, and one
// WebSocket message when rw frames.
func writePacket(w io.Writer, p packets.ControlPacket) error {
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// maxHubFrame bounds a frame from the hub: its MQTT packets to a device
// are a few hundred bytes, so a frame near this is a broken hub.
const maxHubFrame = 1 << 20

// wsStream carries MQTT in masked binary WebSocket messages and reads the
// hub's messages back as one byte stream.
type wsStream struct {
	w   io.Writer
	r   io.Reader
	buf []byte
}

func (s *wsStream) Write(p []byte) (int, error) {
	f := ws.NewBinaryFrame(p)
	f = ws.MaskFrameInPlace(f) // p is ours (a fresh buffer), masking it in place is fine
	if err := ws.WriteFrame(s.w, f); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *wsStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		f, err := wstest.ReadFrame(s.r, maxHubFrame)
		if err != nil {
			return 0, err
		}
		switch {
		case f.Header.OpCode == ws.OpClose:
			return 0, io.EOF
		case f.Header.OpCode.IsControl():
			continue // the hub sends no pings to a silent client within the test
		}
		if f.Header.Masked {
			return 0, errors.New("masked frame from the server")
		}
		s.buf = f.Payload
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// CloseAll closes the connections in parallel.
func CloseAll(conns []net.Conn) {
	var wg sync.WaitGroup
	ch := make(chan net.Conn)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range ch {
				c.Close()
			}
		}()
	}
	for _, c := range conns {
		if c != nil {
			ch <- c
		}
	}
	close(ch)
	wg.Wait()
}
