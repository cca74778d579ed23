package certerr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Hub CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert, key}
}

func (ca testCA) issue(t *testing.T, notBefore, notAfter time.Time, dns []string, ips ...net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "hub"},
		NotBefore: notBefore, NotAfter: notAfter, DNSNames: dns, IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// handshake runs a real TLS handshake, over loopback TCP, against a
// server presenting cert and returns the client's error.
func handshake(t *testing.T, cert tls.Certificate, roots *x509.CertPool, name string) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := ln.Accept(); err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name})
	if err == nil {
		c.Close()
	}
	<-done
	return err
}

func TestFind(t *testing.T) {
	ca := newCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	now := time.Now()
	valid := ca.issue(t, now.Add(-time.Hour), now.Add(time.Hour), []string{"hub.example", "hub.lan"}, net.ParseIP("10.0.0.1"))
	expired := ca.issue(t, now.Add(-2*time.Hour), now.Add(-time.Hour), []string{"hub.example"})
	future := ca.issue(t, now.Add(time.Hour), now.Add(2*time.Hour), []string{"hub.example"})
	noNames := ca.issue(t, now.Add(-time.Hour), now.Add(time.Hour), nil)

	for _, tc := range []struct {
		name  string
		cert  tls.Certificate
		roots *x509.CertPool
		host  string
		cause Cause
		says  []string
	}{
		{"wrong name", valid, roots, "other.example", WrongName,
			[]string{`name "other.example" not in the certificate, which holds hub.example, hub.lan and 10.0.0.1`}},
		{"wrong address", valid, roots, "10.0.0.2", WrongName,
			[]string{`name "10.0.0.2" not in the certificate`, "10.0.0.1"}},
		{"no names", noNames, roots, "hub.example", WrongName,
			[]string{`name "hub.example" not in the certificate, which holds no name at all`}},
		{"unknown authority", valid, x509.NewCertPool(), "hub.example", UnknownAuthority,
			[]string{"certificate not trusted: issued by CN=Test Hub CA, an authority not trusted here"}},
		{"expired", expired, roots, "hub.example", Expired,
			[]string{"certificate expired at " + expired.Leaf.NotAfter.UTC().Format(time.RFC3339), "this machine's clock says"}},
		{"not yet valid", future, roots, "hub.example", NotYetValid,
			[]string{"certificate not valid before " + future.Leaf.NotBefore.UTC().Format(time.RFC3339), "this machine's clock says"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := handshake(t, tc.cert, tc.roots, tc.host)
			if err == nil {
				t.Fatal("the handshake succeeded")
			}
			f, ok := Find(fmt.Errorf("connecting: %w", err))
			if !ok {
				t.Fatalf("Find(%v) found nothing", err)
			}
			if f.Cause != tc.cause {
				t.Errorf("cause %d, want %d (%v)", f.Cause, tc.cause, err)
			}
			for _, s := range tc.says {
				if !strings.Contains(f.String(), s) {
					t.Errorf("%q lacks %q", f, s)
				}
			}
			if fix := f.SDKFix(); !strings.Contains(fix, "Options.TLSConfig") && tc.cause == UnknownAuthority {
				t.Errorf("SDKFix %q names no Options field", fix)
			}
		})
	}
	for _, err := range []error{nil, errors.New("connection refused"), &net.OpError{Op: "dial", Err: errors.New("no route to host")}} {
		if f, ok := Find(err); ok {
			t.Errorf("Find(%v) = %v", err, f)
		}
	}
}
