package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/gobwas/ws"

	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// Flood makes failing device logins at a steady rate: each attempt is a
// fresh TCP connection from one of SourceIPs, a full TLS handshake (no
// session resumption: the most a login can cost the hub), and an MQTT
// CONNECT naming a device that exists with a SAS token signed by a key
// nobody holds. A share of the attempts goes over MQTT/WebSocket. It is
// open-loop: attempts start on a fixed schedule, at most MaxInFlight at
// once; an attempt whose turn comes while MaxInFlight are still busy is
// skipped and counted, so the run stays bounded in count and time.
type Flood struct {
	Host     string // the hub's host name, for the token and the username
	Device   string // a device the hub knows
	MQTTAddr string // MQTT over TLS host:port
	WSURL    string // wss://host:port/$iothub/websocket; "" for none
	// WSEvery sends one attempt in WSEvery over WebSocket (0: none).
	WSEvery   int
	SourceIPs []net.IP
	Rate      float64 // attempts a second
	Duration  time.Duration
	// MaxInFlight caps the attempts in progress; Timeout bounds each.
	MaxInFlight int
	Timeout     time.Duration
}

// FloodResult is what a Flood did and how the hub answered, by outcome:
// "CONNACK n", "closed during TLS", "closed before CONNACK", "timeout",
// "dial error", "other error".
type FloodResult struct {
	Attempts  int            // started
	Skipped   int            // their turn came with MaxInFlight busy
	Seconds   float64        // from the first attempt to the last one's end
	Rate      float64        // attempts finished a second
	Outcomes  map[string]int // all attempts
	WSOutcome map[string]int `json:",omitempty"` // the WebSocket ones among them
	P50, P99  float64        // ms, attempt start to its outcome
	LastError string         `json:",omitempty"`
}

// Outcome names.
const (
	OutClosedTLS    = "closed during TLS"
	OutClosedMQTT   = "closed before CONNACK"
	OutTimeout      = "timeout"
	OutDialError    = "dial error"
	OutOtherError   = "other error"
	outConnackFirst = "CONNACK "
)

// Run floods until Duration has passed (or ctx ends) and every attempt
// has ended.
func (f *Flood) Run(ctx context.Context) FloodResult {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	tok, _ := sas.New(f.Host+"/devices/"+f.Device, base64.StdEncoding.EncodeToString(key), "", time.Now().Add(time.Hour))
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession = true
	cp.ClientIdentifier = f.Device
	cp.UsernameFlag, cp.Username = true, f.Host+"/"+f.Device+"/?api-version="+wire.APIVersion
	cp.PasswordFlag, cp.Password = true, []byte(tok)
	cp.Keepalive = 60
	var connect strings.Builder
	_ = cp.Write(&connect)
	conf := &tls.Config{
		// An attacker does not check whom it talks to, and offers no
		// session to resume: each attempt is a full handshake.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
		// The attacker shares the machine with the streams it is measured
		// against, where a real one would not: the cheapest key exchange
		// keeps its own CPU from passing for the hub's cost.
		CurvePreferences: []tls.CurveID{tls.X25519},
	}
	if f.MaxInFlight <= 0 {
		f.MaxInFlight = 256
	}
	if f.Timeout <= 0 {
		f.Timeout = 5 * time.Second
	}
	var (
		mu      sync.Mutex
		res     = FloodResult{Outcomes: map[string]int{}, WSOutcome: map[string]int{}}
		hist    Hist
		wg      sync.WaitGroup
		sem     = make(chan struct{}, f.MaxInFlight)
		started = time.Now()
		total   = int(f.Rate * f.Duration.Seconds())
	)
	for i := 0; i < total && ctx.Err() == nil; i++ {
		at := started.Add(time.Duration(float64(i) / f.Rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			sleep(ctx, d)
		}
		select {
		case sem <- struct{}{}:
		default:
			res.Skipped++
			continue
		}
		res.Attempts++
		useWS := f.WSURL != "" && f.WSEvery > 0 && i%f.WSEvery == 0
		var src net.IP
		if len(f.SourceIPs) > 0 {
			src = f.SourceIPs[i%len(f.SourceIPs)]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			out, err := f.attempt(ctx, conf, src, useWS, []byte(connect.String()))
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			hist.Add(d)
			res.Outcomes[out]++
			if useWS {
				res.WSOutcome[out]++
			}
			if err != nil {
				res.LastError = err.Error()
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(started).Seconds()
	done := 0
	for _, n := range res.Outcomes {
		done += n
	}
	res.Rate = float64(done) / res.Seconds
	res.P50, res.P99 = float64(hist.Quantile(0.5))/1e6, float64(hist.Quantile(0.99))/1e6
	return res
}

// attempt makes one failing login and names its outcome.
func (f *Flood) attempt(ctx context.Context, conf *tls.Config, src net.IP, useWS bool, connect []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, f.Timeout)
	defer cancel()
	nd := &net.Dialer{}
	if src != nil {
		nd.LocalAddr = &net.TCPAddr{IP: src}
	}
	deadline, _ := ctx.Deadline()
	var (
		conn net.Conn
		rw   io.ReadWriter
	)
	if useWS {
		u, err := url.Parse(f.WSURL)
		if err != nil {
			return OutOtherError, err
		}
		raw, err := nd.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return OutDialError, err
		}
		defer raw.Close()
		raw.SetDeadline(deadline)
		wconf := conf.Clone()
		wconf.ServerName = u.Hostname()
		tc := tls.Client(raw, wconf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return classify(err, OutClosedTLS), err
		}
		d := ws.Dialer{Protocols: []string{wire.SubprotocolMQTT}, NetDial: func(context.Context, string, string) (net.Conn, error) { return tc, nil }}
		// ws:// here: TLS is already on tc.
		u.Scheme = "ws"
		c, br, _, err := d.Dial(ctx, u.String())
		if err != nil {
			return classify(err, OutClosedMQTT), err
		}
		var r io.Reader = c
		if br != nil {
			r = io.MultiReader(br, c)
		}
		conn, rw = c, &wsStream{w: c, r: r}
	} else {
		raw, err := nd.DialContext(ctx, "tcp", f.MQTTAddr)
		if err != nil {
			return OutDialError, err
		}
		defer raw.Close()
		raw.SetDeadline(deadline)
		tc := tls.Client(raw, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return classify(err, OutClosedTLS), err
		}
		conn, rw = tc, tc
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	if _, err := rw.Write(connect); err != nil {
		return classify(err, OutClosedMQTT), err
	}
	p, err := packets.ReadPacket(bufio.NewReader(rw))
	if err != nil {
		return classify(err, OutClosedMQTT), err
	}
	ca, ok := p.(*packets.ConnackPacket)
	if !ok {
		return OutOtherError, errors.New("answer to CONNECT: " + p.String())
	}
	return outConnackFirst + strconv.Itoa(int(ca.ReturnCode)), nil
}

// classify names an I/O error: a deadline is a timeout, a reset or an EOF
// is the hub closing (as what, says closed).
func classify(err error, closed string) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return OutTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return closed
	case strings.Contains(err.Error(), "handshake"), strings.Contains(err.Error(), "EOF"):
		return closed
	}
	return OutOtherError
}

// SortedOutcomes lists outcomes as "name: n", the most frequent first.
func SortedOutcomes(m map[string]int) []string {
	type kv struct {
		k string
		n int
	}
	var kvs []kv
	for k, n := range m {
		kvs = append(kvs, kv{k, n})
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].n > kvs[j].n || kvs[i].n == kvs[j].n && kvs[i].k < kvs[j].k })
	var out []string
	for _, e := range kvs {
		out = append(out, e.k+": "+strconv.Itoa(e.n))
	}
	return out
}
