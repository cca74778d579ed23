package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// testCA is a certificate authority made up for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T, cn string, parent *testCA) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

func serial(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// deviceCert makes a client certificate with subject CN cn, signed by ca
// (self-signed when ca is nil), valid from notBefore to notAfter. chain
// adds intermediates after the leaf, as a device sends them.
func deviceCert(t *testing.T, cn string, ca *testCA, notBefore, notAfter time.Time, chain ...*testCA) tls.Certificate {
	t.Helper()
	return issueCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, chain...)
}

// issueCert makes a certificate from tmpl (its serial number filled in)
// with a new P-256 key, signed by ca (self-signed when ca is nil); chain
// adds intermediates after the leaf.
func issueCert(t *testing.T, tmpl *x509.Certificate, ca *testCA, chain ...*testCA) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial(t)
	signer, signerKey := tmpl, any(key)
	if ca != nil {
		signer, signerKey = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	for _, in := range chain {
		c.Certificate = append(c.Certificate, in.cert.Raw)
	}
	return c
}

func validCert(t *testing.T, cn string, ca *testCA, chain ...*testCA) tls.Certificate {
	return deviceCert(t, cn, ca, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), chain...)
}

// fingerprint is the SHA-256 of the leaf, as openssl prints it: upper
// case with colons.
func fingerprint(c tls.Certificate) string {
	sum := sha256.Sum256(c.Certificate[0])
	var parts []string
	for _, b := range sum {
		parts = append(parts, strings.ToUpper(hex.EncodeToString([]byte{b})))
	}
	return strings.Join(parts, ":")
}

// dialX509 connects a device with a client certificate; cert nil dials
// without one.
func (h *testHub) dialX509(t *testing.T, connStr string, cert *tls.Certificate, tr device.Transport) (*device.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dc, err := device.Dial(ctx, connStr, devOptions(device.Options{
		TLSConfig: h.TLS, Certificate: cert, Transport: tr, MQTTAddress: h.MQTTAddr, Logger: testLogger(t),
	}))
	if err == nil {
		t.Cleanup(func() { dc.Close() })
	}
	return dc, err
}

// mustStream checks a stream to id works end to end through dc.
func mustStream(t *testing.T, svc *service.Client, dc *device.Client, id string) {
	t.Helper()
	serveEcho(t, dc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := svc.OpenStream(ctx, id, "echo")
	if err != nil {
		t.Fatalf("open stream to %s: %v", id, err)
	}
	defer conn.Close()
	echoOnce(t, conn, "hello "+id)
}

func wantRefused(t *testing.T, what string, dc *device.Client, err error) {
	t.Helper()
	if err == nil {
		dc.Close()
		t.Fatalf("%s: connected, want refused", what)
	}
	if !errors.Is(err, device.ErrUnauthorized) {
		t.Fatalf("%s: %v, want device.ErrUnauthorized", what, err)
	}
}

// rawConnect sends one MQTT CONNECT over TLS with exactly these
// credentials, for what the device SDK never sends (a token and a
// certificate of the wrong kind), and reports the CONNACK.
func (h *testHub) rawConnect(t *testing.T, clientID, password string, cert *tls.Certificate) error {
	t.Helper()
	conf := h.TLS.Clone()
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	opts := paho.NewClientOptions().AddBroker("tls://" + h.MQTTAddr).SetTLSConfig(conf).
		SetClientID(clientID).SetUsername("127.0.0.1/" + clientID + "/?api-version=" + wire.APIVersion).
		SetPassword(password).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		t.Fatal("CONNECT: no CONNACK")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	c.Disconnect(0)
	return nil
}

func TestX509SelfSigned(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	svc := h.service(t)
	ctx := context.Background()

	cert := validCert(t, "cam1", nil)
	d, err := svc.CreateDeviceX509(ctx, "cam1", fingerprint(cert))
	if err != nil {
		t.Fatal(err)
	}
	if d.Authentication.Type != wire.AuthSelfSigned || d.Authentication.SymmetricKey != nil {
		t.Fatalf("authentication %+v", d.Authentication)
	}
	cs := svc.DeviceConnectionString(d)
	if !strings.HasSuffix(cs, ";DeviceId=cam1;x509=true") || strings.Contains(cs, "SharedAccessKey") {
		t.Fatalf("connection string %q", cs)
	}

	for _, tr := range []device.Transport{device.TLS, device.WebSocket} {
		t.Run(tr.String(), func(t *testing.T) {
			dc, err := h.dialX509(t, cs, &cert, tr)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			mustStream(t, svc, dc, "cam1")
			dc.Close()
		})
	}

	t.Run("refused", func(t *testing.T) {
		other := validCert(t, "cam1", nil) // right CN, another key: another thumbprint
		dc, err := h.dialX509(t, cs, &other, device.TLS)
		wantRefused(t, "wrong thumbprint", dc, err)

		dc, err = h.dialX509(t, cs, &other, device.WebSocket)
		wantRefused(t, "wrong thumbprint over WebSocket", dc, err)

		// CN is not the device id, though its thumbprint is registered.
		misnamed := validCert(t, "cam9", nil)
		if _, err := svc.CreateDeviceX509(ctx, "cam2", fingerprint(misnamed)); err != nil {
			t.Fatal(err)
		}
		dc, err = h.dialX509(t, "HostName="+h.Addr+";DeviceId=cam2;x509=true", &misnamed, device.TLS)
		wantRefused(t, "CN ≠ device id", dc, err)

		expired := deviceCert(t, "cam3", nil, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
		notYet := deviceCert(t, "cam3", nil, time.Now().Add(time.Hour), time.Now().Add(48*time.Hour))
		if _, err := svc.CreateDeviceX509(ctx, "cam3", fingerprint(expired), fingerprint(notYet)); err != nil {
			t.Fatal(err)
		}
		cs3 := "HostName=" + h.Addr + ";DeviceId=cam3;x509=true"
		dc, err = h.dialX509(t, cs3, &expired, device.TLS)
		wantRefused(t, "expired certificate", dc, err)
		dc, err = h.dialX509(t, cs3, &notYet, device.TLS)
		wantRefused(t, "certificate not yet valid", dc, err)

		// No certificate at all, and x509 connection string: the SDK
		// refuses before dialing.
		if _, err := h.dialX509(t, cs, nil, device.TLS); err == nil || errors.Is(err, device.ErrUnauthorized) {
			t.Fatalf("x509 without a certificate: %v", err)
		}
	})

	t.Run("token refused", func(t *testing.T) {
		// A device token signed by the owner policy (DeviceConnect) opens
		// any key device, but never a certificate device: neither alone
		// nor beside a wrong certificate.
		owner, err := sas.ParseConnectionString(h.Owner)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := sas.New("127.0.0.1/devices/cam1", owner.SharedAccessKey, owner.SharedAccessKeyName, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.rawConnect(t, "cam1", tok, nil); err == nil {
			t.Fatal("a SAS token opened a selfSigned device")
		}
		other := validCert(t, "cam1", nil)
		if err := h.rawConnect(t, "cam1", tok, &other); err == nil {
			t.Fatal("a SAS token with a wrong certificate opened a selfSigned device")
		}
		// The same token does open a key device: the refusals above are
		// about the device's type.
		h.addDevice(t, "keys1")
		tok, _ = sas.New("127.0.0.1/devices/keys1", owner.SharedAccessKey, owner.SharedAccessKeyName, time.Now().Add(time.Hour))
		if err := h.rawConnect(t, "keys1", tok, nil); err != nil {
			t.Fatalf("policy token for a key device: %v", err)
		}
	})

	t.Run("certificate for a key device refused", func(t *testing.T) {
		keyed := h.addDevice(t, "keys2")
		cert := validCert(t, "keys2", nil)
		dc, err := h.dialX509(t, "HostName="+h.Addr+";DeviceId=keys2;x509=true", &cert, device.TLS)
		wantRefused(t, "certificate for a key device", dc, err)
		// With its key it still connects, certificate or not.
		dc, err = h.dialX509(t, keyed, &cert, device.TLS)
		if err != nil {
			t.Fatalf("key device presenting a certificate and its key: %v", err)
		}
		dc.Close()
	})
}

// TestX509ThumbprintNormalized: the hub takes a thumbprint in upper case
// with colons (openssl's form) straight from a device document, stores it
// normalized, and the device connects.
func TestX509ThumbprintNormalized(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	svc := h.service(t)
	cert := validCert(t, "cam4", nil)
	fp := fingerprint(cert)
	d, err := svc.UpdateDevice(context.Background(), &wire.Device{
		DeviceID:       "cam4",
		Authentication: wire.Authentication{Type: "selfsigned", X509Thumbprint: &wire.X509Thumbprint{PrimaryThumbprint: &fp}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ToLower(strings.ReplaceAll(fp, ":", ""))
	if tp := d.Authentication.X509Thumbprint; d.Authentication.Type != wire.AuthSelfSigned || tp == nil || tp.PrimaryThumbprint == nil || *tp.PrimaryThumbprint != want {
		t.Fatalf("stored authentication %+v", d.Authentication)
	}
	dc, err := h.dialX509(t, svc.DeviceConnectionString(d), &cert, device.TLS)
	if err != nil {
		t.Fatal(err)
	}
	mustStream(t, svc, dc, "cam4")

	// A malformed thumbprint is refused at registration.
	bad := "12:34"
	_, err = svc.UpdateDevice(context.Background(), &wire.Device{
		DeviceID:       "cam5",
		Authentication: wire.Authentication{Type: wire.AuthSelfSigned, X509Thumbprint: &wire.X509Thumbprint{PrimaryThumbprint: &bad}},
	})
	var ae *service.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 {
		t.Fatalf("malformed thumbprint: %v, want 400", err)
	}
}

func TestX509CertificateAuthority(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	svc := h.service(t)
	ctx := context.Background()

	root := newTestCA(t, "Fleet Root", nil)
	inter := newTestCA(t, "Fleet Intermediate", root)
	stranger := newTestCA(t, "Someone Else", nil)

	if _, err := svc.UploadCertificate(ctx, "fleet", root.pem); err != nil {
		t.Fatal(err)
	}
	list, err := svc.ListCertificates(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "fleet" || list[0].Subject != "CN=Fleet Root" {
		t.Fatalf("certificates %+v %v", list, err)
	}
	d, err := svc.CreateDeviceCA(ctx, "gw1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Authentication.Type != wire.AuthCertificateAuthority {
		t.Fatalf("authentication %+v", d.Authentication)
	}
	cs := svc.DeviceConnectionString(d)

	good := validCert(t, "gw1", root)
	for _, tr := range []device.Transport{device.TLS, device.WebSocket} {
		dc, err := h.dialX509(t, cs, &good, tr)
		if err != nil {
			t.Fatalf("%s: %v", tr, err)
		}
		mustStream(t, svc, dc, "gw1")
		dc.Close()
	}

	// Through an intermediate the device sends along.
	viaInter := validCert(t, "gw1", inter, inter)
	dc, err := h.dialX509(t, cs, &viaInter, device.TLS)
	if err != nil {
		t.Fatalf("through an intermediate: %v", err)
	}
	dc.Close()

	foreign := validCert(t, "gw1", stranger)
	dc, err = h.dialX509(t, cs, &foreign, device.TLS)
	wantRefused(t, "certificate of a CA not uploaded", dc, err)

	misnamed := validCert(t, "gw2", root)
	dc, err = h.dialX509(t, cs, &misnamed, device.TLS)
	wantRefused(t, "CN ≠ device id", dc, err)

	expired := deviceCert(t, "gw1", root, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	dc, err = h.dialX509(t, cs, &expired, device.TLS)
	wantRefused(t, "expired certificate", dc, err)

	if err := svc.DeleteCertificate(ctx, "fleet"); err != nil {
		t.Fatal(err)
	}
	dc, err = h.dialX509(t, cs, &good, device.TLS)
	wantRefused(t, "after its CA was deleted", dc, err)
	if err := svc.DeleteCertificate(ctx, "fleet"); !errors.Is(err, service.ErrCertificateNotFound) {
		t.Fatalf("deleting a missing certificate: %v", err)
	}

	// What is not a CA certificate is not stored.
	if _, err := svc.UploadCertificate(ctx, "leaf", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good.Certificate[0]}))); err == nil {
		t.Fatal("a leaf certificate was accepted as a CA")
	}
}
