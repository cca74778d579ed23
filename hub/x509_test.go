package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

func selfSignedLeaf(t *testing.T, cn string, from, to time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: from, NotAfter: to}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVerifyDeviceCert covers the refusals the end-to-end tests cannot
// reach cheaply, and that the cheap checks come before any CA read.
func TestVerifyDeviceCert(t *testing.T) {
	now := time.Now()
	leaf := selfSignedLeaf(t, "d1", now.Add(-time.Hour), now.Add(time.Hour))
	sum256, sum1 := wire.Thumbprints(leaf.Raw)
	reads := 0
	noCAs := func(context.Context) (*x509.CertPool, int, error) { reads++; return x509.NewCertPool(), 0, nil }
	broken := func(context.Context) (*x509.CertPool, int, error) { reads++; return nil, 0, errors.New("storage down") }
	self := func(tp ...string) wire.Device {
		d := wire.Device{DeviceID: "d1", Authentication: wire.Authentication{Type: wire.AuthSelfSigned, X509Thumbprint: &wire.X509Thumbprint{}}}
		if len(tp) > 0 {
			d.Authentication.X509Thumbprint.PrimaryThumbprint = &tp[0]
		}
		if len(tp) > 1 {
			d.Authentication.X509Thumbprint.SecondaryThumbprint = &tp[1]
		}
		return d
	}
	caDev := wire.Device{DeviceID: "d1", Authentication: wire.Authentication{Type: wire.AuthCertificateAuthority}}
	other := strings.Repeat("0", 64)

	for _, tc := range []struct {
		name  string
		dev   wire.Device
		certs []*x509.Certificate
		at    time.Time
		cas   func(context.Context) (*x509.CertPool, int, error)
		want  string // "" accepts
	}{
		{"primary", self(sum256), []*x509.Certificate{leaf}, now, noCAs, ""},
		{"secondary", self(other, sum256), []*x509.Certificate{leaf}, now, noCAs, ""},
		{"sha1", self(sum1), []*x509.Certificate{leaf}, now, noCAs, ""},
		{"no thumbprint matches", self(other), []*x509.Certificate{leaf}, now, noCAs, "matches neither"},
		{"no certificate", self(sum256), nil, now, noCAs, "presented none"},
		{"wrong CN", wire.Device{DeviceID: "d2", Authentication: self(sum256).Authentication}, []*x509.Certificate{leaf}, now, noCAs, "not the device id"},
		{"expired", self(sum256), []*x509.Certificate{leaf}, now.Add(2 * time.Hour), noCAs, "valid from"},
		{"not yet valid", self(sum256), []*x509.Certificate{leaf}, now.Add(-2 * time.Hour), noCAs, "valid from"},
		{"no CA uploaded", caDev, []*x509.Certificate{leaf}, now, noCAs, "no CA certificate"},
		{"CA storage down", caDev, []*x509.Certificate{leaf}, now, broken, "storage down"},
		{"key device", wire.Device{DeviceID: "d1", Authentication: wire.Authentication{Type: wire.AuthSAS}}, []*x509.Certificate{leaf}, now, noCAs, "takes no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyDeviceCert(context.Background(), tc.dev, tc.certs, tc.at, tc.cas)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// Only the two certificateAuthority cases that got past the cheap
	// checks read the CAs.
	if reads != 2 {
		t.Fatalf("CAs read %d times, want 2", reads)
	}
}
