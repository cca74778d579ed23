package batchconn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func selfSigned(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"x"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestBatchOneWritePerFrame(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		defer tc.Close()
		b, _ := io.ReadAll(tc)
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: raw}
	bc := New(counted)
	tc := tls.Server(bc, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if Find(tc) != bc {
		t.Fatal("Find does not see the Conn beneath the tls.Conn")
	}
	frame := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB: 16 records
	before := counted.writes.Load()
	if err := bc.Batch(func() error { _, err := tc.Write(frame); return err }); err != nil {
		t.Fatal(err)
	}
	if n := counted.writes.Load() - before; n != 1 {
		t.Fatalf("a batched 256 KiB write took %d socket writes, want 1", n)
	}
	before = counted.writes.Load()
	if _, err := tc.Write(frame); err != nil {
		t.Fatal(err)
	}
	if n := counted.writes.Load() - before; n < 16 {
		t.Fatalf("an unbatched write took %d socket writes; the test proves nothing", n)
	}
	tc.Close()
	if b := <-got; !bytes.Equal(b, append(append([]byte{}, frame...), frame...)) {
		t.Fatalf("received %d bytes, want %d", len(b), 2*len(frame))
	}
}

// After a flush fails, the TLS stream above is broken: nothing more may
// reach the socket.
func TestFailedFlushIsSticky(t *testing.T) {
	a, b := net.Pipe()
	b.Close()
	bc := New(a)
	err := bc.Batch(func() error { _, err := bc.Write([]byte("frame")); return err })
	if err == nil {
		t.Fatal("a flush to a closed pipe succeeded")
	}
	if _, err2 := bc.Write([]byte("more")); err2 != err {
		t.Fatalf("write after a failed flush: %v, want the flush's %v", err2, err)
	}
}
