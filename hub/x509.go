package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/tether-io/tether/wire"
)

// X.509 device authentication. The listeners request a client certificate
// but let the TLS layer verify nothing (tls.RequestClientCert), so that
// devices with keys and services, which present none, are unaffected; the
// TLS handshake has still proved that the client holds the certificate's
// private key (CertificateVerify). What the certificate is worth is decided
// here, per device, once the CONNECT names one. The CAs it chains to are
// uploaded through /certificates (certificates.go).

// checkDeviceCert decides a CONNECT of a device registered as selfSigned
// or certificateAuthority, by the certificate chain it presented (leaf
// first). Its password is ignored, as Azure ignores it: a token never
// opens such a device.
func (s *Server) checkDeviceCert(ctx context.Context, dev wire.Device, certs []*x509.Certificate) error {
	return verifyDeviceCert(ctx, dev, certs, time.Now(), s.reg.CAPool)
}

// verifyDeviceCert is checkDeviceCert with the clock and the CA source
// given, for tests. The cheap checks come first, so that a refused
// certificate costs no more storage reads than an accepted one.
func verifyDeviceCert(ctx context.Context, dev wire.Device, certs []*x509.Certificate, now time.Time,
	cas func(context.Context) (*x509.CertPool, int, error)) error {
	if len(certs) == 0 {
		return fmt.Errorf("device authenticates with an X.509 certificate (%s) and presented none", dev.Authentication.Type)
	}
	leaf := certs[0]
	if cn := leaf.Subject.CommonName; cn != dev.DeviceID {
		return fmt.Errorf("certificate CN %q is not the device id", cn)
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("certificate is valid from %s to %s only", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	switch dev.Authentication.Type {
	case wire.AuthSelfSigned:
		sum256, sum1 := wire.Thumbprints(leaf.Raw)
		if t := dev.Authentication.X509Thumbprint; t != nil {
			for _, p := range []*string{t.PrimaryThumbprint, t.SecondaryThumbprint} {
				// Stored thumbprints are normalized (registry); the
				// fingerprint is not secret, so a plain compare is fine.
				if p != nil && (*p == sum256 || *p == sum1) {
					return nil
				}
			}
		}
		return fmt.Errorf("certificate SHA-256 %s matches neither thumbprint of the device", sum256)
	case wire.AuthCertificateAuthority:
		roots, n, err := cas(ctx)
		if err != nil {
			return fmt.Errorf("reading the CA certificates: %w", err)
		}
		if n == 0 {
			return errors.New("no CA certificate is uploaded to the hub")
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err = leaf.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			return fmt.Errorf("certificate does not chain to an uploaded CA: %w", err)
		}
		return nil
	}
	return fmt.Errorf("authentication type %q takes no certificate", dev.Authentication.Type)
}
