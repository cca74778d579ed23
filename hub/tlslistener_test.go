package hub

// Tests of the hub's TLS listener: the handshake time limit and the
// refusal of a source in login back-off.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"
)

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
