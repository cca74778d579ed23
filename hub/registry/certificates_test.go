package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

func testCertPEM(t *testing.T, cn string, isCA bool, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-48 * time.Hour),
		NotAfter:              notAfter,
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestCertificates(t *testing.T) {
	r := newRegistry(t)
	ctx := context.Background()
	if list, err := r.Certificates(ctx); err != nil || len(list) != 0 {
		t.Fatalf("empty registry: %v %v", list, err)
	}
	if _, n, err := r.CAPool(ctx); err != nil || n != 0 {
		t.Fatalf("empty pool: %d %v", n, err)
	}
	ca := testCertPEM(t, "Root B", true, time.Now().Add(time.Hour))
	c, err := r.PutCertificate(ctx, "b-root", ca)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "CN=Root B" || len(c.Thumbprint) != 64 || c.Certificate != ca {
		t.Fatalf("stored %+v", c)
	}
	if _, err := r.PutCertificate(ctx, "a.root_2", testCertPEM(t, "Root A", true, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	list, err := r.Certificates(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "a.root_2" || list[1].Name != "b-root" {
		t.Fatalf("list %+v %v", list, err)
	}
	if _, n, err := r.CAPool(ctx); err != nil || n != 2 {
		t.Fatalf("pool: %d %v", n, err)
	}
	if err := r.DeleteCertificate(ctx, "b-root"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteCertificate(ctx, "b-root"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := r.Certificate(ctx, "b-root"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}

	for name, tc := range map[string]struct{ name, pem string }{
		"not a CA":     {"x", testCertPEM(t, "leaf", false, time.Now().Add(time.Hour))},
		"expired":      {"x", testCertPEM(t, "old", true, time.Now().Add(-time.Hour))},
		"no PEM":       {"x", "hello"},
		"two certs":    {"x", ca + ca},
		"a key inside": {"x", ca + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
		"bad name":     {"a/b", ca},
		"empty name":   {"", ca},
		"long name":    {strings.Repeat("n", 65), ca},
		"huge":         {"x", ca + strings.Repeat(" ", maxCertPEM)},
	} {
		if _, err := r.PutCertificate(ctx, tc.name, tc.pem); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// TestX509Devices: thumbprints are stored normalized, a selfSigned device
// needs one, an edit that omits them keeps them, and neither keys nor
// thumbprints survive a change of type.
func TestX509Devices(t *testing.T) {
	r := newRegistry(t)
	ctx := context.Background()
	fp := strings.ToUpper("ab:" + strings.Repeat("cd:", 30) + "ef")
	d := mustPut(t, r, wire.Device{DeviceID: "cam", Authentication: wire.Authentication{
		Type: "SELFSIGNED", X509Thumbprint: &wire.X509Thumbprint{PrimaryThumbprint: &fp},
	}}, "")
	want := "ab" + strings.Repeat("cd", 30) + "ef"
	tp := d.Authentication.X509Thumbprint
	if d.Authentication.Type != wire.AuthSelfSigned || d.Authentication.SymmetricKey != nil || tp == nil ||
		tp.PrimaryThumbprint == nil || *tp.PrimaryThumbprint != want || tp.SecondaryThumbprint != nil {
		t.Fatalf("stored %+v", d.Authentication)
	}

	// An edit without thumbprints keeps them.
	d.Authentication.X509Thumbprint = nil
	d.Status = wire.StatusDisabled
	d2 := mustPut(t, r, d, d.ETag)
	if tp := d2.Authentication.X509Thumbprint; tp == nil || *tp.PrimaryThumbprint != want {
		t.Fatalf("after edit %+v", d2.Authentication)
	}

	bad := "xyz"
	for name, a := range map[string]wire.Authentication{
		"no thumbprint":        {Type: wire.AuthSelfSigned},
		"malformed thumbprint": {Type: wire.AuthSelfSigned, X509Thumbprint: &wire.X509Thumbprint{PrimaryThumbprint: &bad}},
	} {
		if _, _, err := r.Put(ctx, wire.Device{DeviceID: "new", Authentication: a}, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}

	ca := mustPut(t, r, wire.Device{DeviceID: "gw", Authentication: wire.Authentication{Type: "certificateAuthority"}}, "")
	if ca.Authentication.Type != wire.AuthCertificateAuthority || ca.Authentication.SymmetricKey != nil || ca.Authentication.X509Thumbprint != nil {
		t.Fatalf("CA device %+v", ca.Authentication)
	}

	// Back to keys: thumbprints go, keys come.
	d2.Authentication = wire.Authentication{Type: "sas", X509Thumbprint: d2.Authentication.X509Thumbprint}
	d3 := mustPut(t, r, d2, d2.ETag)
	if d3.Authentication.X509Thumbprint != nil || d3.Authentication.SymmetricKey == nil || d3.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("back to sas %+v", d3.Authentication)
	}
}
