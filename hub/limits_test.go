package hub

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tether-io/tether/sas"
)

func TestLimitsResolve(t *testing.T) {
	d := DefaultLimits()
	if got := (Limits{}).resolve(); got != d {
		t.Fatalf("zero Limits resolve to %+v, want the defaults %+v", got, d)
	}
	got := Limits{StreamsPerDevice: 7, StreamRate: -1, MaxBodyBytes: -5, StreamIdleTimeout: time.Minute, TLSHandshakeTimeout: -1}.resolve()
	if got.StreamsPerDevice != 7 || got.StreamRate != -1 || got.MaxBodyBytes != -1 ||
		got.StreamIdleTimeout != time.Minute || got.TLSHandshakeTimeout != -1 || got.StreamsPerHub != d.StreamsPerHub {
		t.Fatalf("resolved %+v", got)
	}
	if d.StreamIdleTimeout != 0 {
		t.Fatal("the idle timeout is on by default")
	}
}

func testCert(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestTLSListener: a client that connects and never completes its
// handshake is cut at the limit, and meanwhile a well-behaved client's
// connection is handshaken and accepted at once, as a *tls.Conn with no
// deadline left on it.
func TestTLSListener(t *testing.T) {
	const limit = 2 * time.Second
	s := &Server{lim: newLimiter(Limits{TLSHandshakeTimeout: limit}, slog.New(slog.DiscardHandler))}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := s.TLSListener(raw, testCert(t))
	defer ln.Close()

	// Before the dial: the hub's clock for the slow one starts at accept.
	start := time.Now()
	slow, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.Write([]byte{0x16, 0x03}) // the start of a ClientHello, then nothing

	good := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			_, err = c.Write([]byte("hi"))
			defer c.Close()
		}
		good <- err
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*tls.Conn); !ok {
		t.Fatalf("Accept returned a %T", c)
	}
	if err := <-good; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > limit/2 {
		t.Fatalf("the good client waited %v behind the slow one", d)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()

	// The slow one is cut at the limit.
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, slow); err != nil {
		t.Fatalf("slow client: %v, want EOF", err)
	}
	if d := time.Since(start); d < limit || d > limit+5*time.Second {
		t.Fatalf("slow handshake cut after %v, want about %v", d, limit)
	}
	if n := testCounter(t, s, limitTLSHandshake); n != 1 {
		t.Fatalf("tether_limited_total{limit=tls_handshake} = %v", n)
	}

	// Close ends Accept.
	ln.Close()
	if _, err := ln.Accept(); err == nil {
		t.Fatal("Accept after Close succeeded")
	}
}

func testCounter(t *testing.T, s *Server, limit string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.lim.counted.WithLabelValues(limit).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestTLSListenerRefusesBackedOffSource: a source in back-off after
// failing logins faster than its rate gets its handshake allowance, then
// its connections are closed before any handshake (and counted under
// auth_backoff_source), while another source shakes hands as usual; once
// the back-off is over the source is served again.
func TestTLSListenerRefusesBackedOffSource(t *testing.T) {
	s := &Server{lim: newLimiter(Limits{AuthFailureRatePerSource: 1}, slog.New(slog.DiscardHandler))}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := s.TLSListener(raw, testCert(t))
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func(src string) error {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := tls.DialWithDialer(d, "tcp", raw.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
		return err
	}
	const bad = "127.0.0.1"
	if err := dial(bad); err != nil {
		t.Fatalf("before any failure: %v", err)
	}
	// Identities the per-identity back-off never sees twice, faster than
	// the source's rate (1 a second, a burst of 1).
	s.lim.loginResult("device a", bad+":1", false)
	s.lim.loginResult("device b", bad+":2", false)
	if s.lim.addr.Wait(bad, time.Now()) <= 0 {
		t.Fatal("no back-off after two failures in a row")
	}
	ok, refused := 0, 0
	start := time.Now()
	for range 3 * backedOffHandshakeBurst {
		if err := dial(bad); err != nil {
			refused++
		} else {
			ok++
		}
	}
	// The allowance: the burst, plus what refills while the loop runs.
	allow := backedOffHandshakeBurst + int(time.Since(start).Seconds()*backedOffHandshakeRate) + 1
	if ok < backedOffHandshakeBurst || ok > allow || refused == 0 {
		t.Fatalf("in back-off: %d handshakes, %d refused; want %d to %d handshakes", ok, refused, backedOffHandshakeBurst, allow)
	}
	if n := testCounter(t, s, limitAuthBackoffSrc); n != float64(refused) {
		t.Fatalf("tether_limited_total{limit=auth_backoff_source} = %v, want %d", n, refused)
	}
	// Another source is not touched.
	for range 3 {
		if err := dial("127.0.0.2"); err != nil {
			t.Fatalf("another source: %v", err)
		}
	}
	// The end of the back-off ends the refusals.
	<-time.After(s.lim.addr.Wait(bad, time.Now()))
	for range 3 * backedOffHandshakeBurst {
		if err := dial(bad); err != nil {
			t.Fatalf("after the back-off: %v", err)
		}
	}
}

// TestLoginBackoffPerIdentity: an identity that keeps failing from one
// source is refused there, naming it, before its credentials are looked
// at; the other identities of that source, and the same identity from
// elsewhere, go on as before, and a success resets it.
func TestLoginBackoffPerIdentity(t *testing.T) {
	s := &Server{lim: newLimiter(Limits{AuthFailures: 3}, slog.New(slog.DiscardHandler))}
	l := s.lim
	const nat, elsewhere = "192.0.2.7:1000", "198.51.100.1:1000"
	for i := range 4 {
		if msg, _ := l.refuseLogin("device gone", nat); msg != "" {
			t.Fatalf("attempt %d refused: %s", i, msg)
		}
		l.loginResult("device gone", nat, false)
	}
	msg, wait := l.refuseLogin("device gone", nat)
	if want := "throttled: too many failed logins for device gone; retry in 1s"; msg != want || wait <= 0 || wait > time.Second {
		t.Fatalf("after 4 failures: %q, wait %v; want %q", msg, wait, want)
	}
	// Its neighbours behind the same address, another port each.
	for _, id := range []string{"device good", "policy service", ""} {
		if msg, _ := l.refuseLogin(id, "192.0.2.7:2000"); msg != "" {
			t.Fatalf("%q from the same address refused: %s", id, msg)
		}
	}
	if msg, _ := l.refuseLogin("device gone", elsewhere); msg != "" {
		t.Fatalf("the same device from another address refused: %s", msg)
	}
	if n := testCounter(t, s, limitAuthBackoff); n != 1 {
		t.Fatalf("tether_limited_total{limit=auth_backoff} = %v, want 1", n)
	}
	l.loginResult("device gone", nat, true)
	if msg, _ := l.refuseLogin("device gone", nat); msg != "" {
		t.Fatalf("refused after a success: %s", msg)
	}
}

// TestLoginBackoffPerSource: with the default limits, a flood that names
// a new identity each time from one source is cut off by the source's
// rate (every login from it refused, naming the source), and so is a
// client that keeps knocking with an identity already refused; another
// source goes on.
func TestLoginBackoffPerSource(t *testing.T) {
	s := &Server{lim: newLimiter(Limits{}, slog.New(slog.DiscardHandler))}
	l := s.lim
	allowed := burst(DefaultLimits().AuthFailureRatePerSource)
	const src = "192.0.2.7"
	n := 0
	for ; n < 10*allowed; n++ {
		id := fmt.Sprintf("device random%d", n)
		if msg, _ := l.refuseLogin(id, src+":1"); msg != "" {
			if want := "throttled: too many failed logins from 192.0.2.7; retry in 1s"; msg != want {
				t.Fatalf("refused with %q, want %q", msg, want)
			}
			break
		}
		l.loginResult(id, src+":1", false)
	}
	// The burst passes, one more failure starts the back-off; a second's
	// refill cannot have come in between.
	if n < allowed+1 || n > allowed+2 {
		t.Fatalf("the flood was cut after %d failures, want %d", n, allowed+1)
	}
	if msg, _ := l.refuseLogin("device good", src+":2"); msg == "" {
		t.Fatal("a login from the source in back-off went on")
	}
	if msg, _ := l.refuseLogin("device good", "198.51.100.1:1"); msg != "" {
		t.Fatalf("another source refused: %s", msg)
	}
	if got := testCounter(t, s, limitAuthBackoffSrc); got != 2 {
		t.Fatalf("tether_limited_total{limit=auth_backoff_source} = %v, want 2", got)
	}

	// One identity, knocking on once it is refused.
	const knocker = "203.0.113.9:1"
	for range DefaultLimits().AuthFailures + 1 {
		l.loginResult("device gone", knocker, false)
	}
	for i := 0; ; i++ {
		msg, _ := l.refuseLogin("device gone", knocker)
		if msg == "throttled: too many failed logins from 203.0.113.9; retry in 1s" {
			break
		}
		if msg == "" || i > allowed {
			t.Fatalf("refusal %d of a throttled identity: %q; the source is not cut off", i, msg)
		}
	}
}

// TestLoginIdentities: the identity of a login is the policy its token
// names, even in a token garbled otherwise, or the device's client id;
// made-up names are cut short.
func TestLoginIdentities(t *testing.T) {
	tok, err := sas.New("hub.example", "c2VjcmV0", "service", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 1000)
	for in, want := range map[string]string{
		tok: "policy service",
		strings.Replace(tok, "sig=", "sig=AAAA", 1):                     "policy service",
		"SharedAccessSignature skn=a%20b&sr=x&sig=y&se=1":               "policy a b",
		"SharedAccessSignature sr=x&sig=y&se=1":                         "",
		"SharedAccessSignature sr=x&xskn=service":                       "",
		"SharedAccessSignature skn=&sr=x":                               "",
		"SharedAccessSignature sr=hub.example%2Fdevices%2Fd&sig=y&se=1": "",
		"SharedAccessSignature skn=" + long:                             "policy " + long[:maxIdentityName],
	} {
		if got := policyIdentity(in); got != want {
			t.Errorf("policyIdentity(%.60q) = %.60q, want %.60q", in, got, want)
		}
	}
	if got := deviceIdentity("dev1/mod1"); got != "device dev1/mod1" {
		t.Errorf("deviceIdentity = %q", got)
	}
	if got := deviceIdentity(long); got != "device "+long[:maxIdentityName] {
		t.Errorf("deviceIdentity of a long id = %.60q", got)
	}
	if got := deviceIdentity(""); got != "" {
		t.Errorf("deviceIdentity of no id = %q", got)
	}
}
