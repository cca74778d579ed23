package registry

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

// maxCertPEM bounds an uploaded CA certificate. Real ones are a few KiB;
// the bound keeps a RegistryWrite holder from filling the bucket with one
// call.
const maxCertPEM = 32 << 10

// ValidateCertName checks a CA certificate's name: 1 to 64 ASCII letters,
// digits and . _ -, as Azure names certificates.
func ValidateCertName(name string) error { return validateName("certificate name", name) }

// validateName checks a name under the rule Azure gives certificates and
// access policies alike: 1 to 64 ASCII letters, digits and . _ -.
func validateName(kind, name string) error {
	if len(name) == 0 || len(name) > 64 {
		return fmt.Errorf("%w: %s must be 1 to 64 characters", ErrInvalid, kind)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: %s %q may hold only letters, digits, '.', '_' and '-'", ErrInvalid, kind, name)
		}
	}
	return nil
}

// ParseCA parses the PEM of a CA certificate: exactly one certificate,
// marked as a CA. Other PEM blocks (a key pasted by mistake) are refused
// rather than stored, so that no private key ever lands in the registry.
func ParseCA(pemText string) (*x509.Certificate, error) {
	if len(pemText) > maxCertPEM {
		return nil, fmt.Errorf("%w: certificate larger than %d bytes", ErrInvalid, maxCertPEM)
	}
	var cert *x509.Certificate
	rest := []byte(pemText)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %q: want only a CERTIFICATE", ErrInvalid, b.Type)
		}
		if cert != nil {
			return nil, fmt.Errorf("%w: more than one certificate: upload each CA under its own name", ErrInvalid)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate: %v", ErrInvalid, err)
		}
		cert = c
	}
	if cert == nil {
		return nil, fmt.Errorf("%w: no PEM certificate", ErrInvalid)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%w: %q is not a CA certificate (basicConstraints CA:TRUE)", ErrInvalid, cert.Subject.String())
	}
	return cert, nil
}

// PutCertificate stores (or replaces) the CA certificate called name.
// From then on it vouches for every certificateAuthority device whose
// certificate chains to it: uploading one is as strong as RegistryWrite.
func (r *Registry) PutCertificate(ctx context.Context, name, pemText string) (wire.CACertificate, error) {
	if err := ValidateCertName(name); err != nil {
		return wire.CACertificate{}, err
	}
	cert, err := ParseCA(pemText)
	if err != nil {
		return wire.CACertificate{}, err
	}
	now := r.now()
	if now.After(cert.NotAfter) {
		return wire.CACertificate{}, fmt.Errorf("%w: certificate expired on %s", ErrInvalid, cert.NotAfter.UTC().Format("2006-01-02"))
	}
	sum, _ := wire.Thumbprints(cert.Raw)
	c := wire.CACertificate{
		Name:        name,
		Subject:     cert.Subject.String(),
		Thumbprint:  sum,
		Expiry:      cert.NotAfter.UTC(),
		Created:     now,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
	}
	data, err := json.Marshal(c)
	if err != nil {
		return wire.CACertificate{}, fmt.Errorf("registry: encode certificate: %w", err)
	}
	if _, err := r.certs.Put(ctx, cluster.SubjectToken(name), data); err != nil {
		return wire.CACertificate{}, fmt.Errorf("registry: write certificate %q: %w", name, err)
	}
	return c, nil
}

// Certificate returns the CA certificate called name.
func (r *Registry) Certificate(ctx context.Context, name string) (wire.CACertificate, error) {
	if err := ValidateCertName(name); err != nil {
		return wire.CACertificate{}, err
	}
	e, err := r.certs.Get(ctx, cluster.SubjectToken(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return wire.CACertificate{}, fmt.Errorf("%w: certificate %q", ErrNotFound, name)
	}
	if err != nil {
		return wire.CACertificate{}, fmt.Errorf("registry: get certificate %q: %w", name, err)
	}
	var c wire.CACertificate
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return wire.CACertificate{}, fmt.Errorf("registry: certificate %q: stored record: %w", name, err)
	}
	return c, nil
}

// Certificates returns every uploaded CA certificate, sorted by name.
func (r *Registry) Certificates(ctx context.Context) ([]wire.CACertificate, error) {
	keys, err := listKeys(ctx, r.certs)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, fmt.Errorf("registry: list certificates: %w", err)
	}
	out := make([]wire.CACertificate, 0, len(keys))
	for _, k := range keys {
		name, err := cluster.ParseSubjectToken(k)
		if err != nil || ValidateCertName(name) != nil {
			continue // not written by this package
		}
		c, err := r.Certificate(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b wire.CACertificate) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteCertificate removes the CA certificate called name; devices it
// vouched for are refused from their next connection on.
func (r *Registry) DeleteCertificate(ctx context.Context, name string) error {
	if _, err := r.Certificate(ctx, name); err != nil {
		return err
	}
	if err := r.certs.Delete(ctx, cluster.SubjectToken(name)); err != nil {
		return fmt.Errorf("registry: delete certificate %q: %w", name, err)
	}
	return nil
}

// CAPool is every uploaded CA as a pool to verify device certificates
// against, and how many it holds. It reads the bucket each time, so a CA
// deleted on any node stops vouching at once.
func (r *Registry) CAPool(ctx context.Context) (*x509.CertPool, int, error) {
	list, err := r.Certificates(ctx)
	if err != nil {
		return nil, 0, err
	}
	pool := x509.NewCertPool()
	n := 0
	for _, c := range list {
		cert, err := ParseCA(c.Certificate)
		if err != nil {
			r.log.Warn("skipping an unreadable stored CA certificate", "name", c.Name, "err", err)
			continue
		}
		pool.AddCert(cert)
		n++
	}
	return pool, n, nil
}

// validateThumbprints checks the thumbprints a client sent, whatever the
// authentication type: a malformed one is a mistake worth reporting even
// where it would be dropped.
func validateThumbprints(a wire.Authentication) error {
	t := a.X509Thumbprint
	if t == nil {
		return nil
	}
	for _, p := range [...]struct {
		name string
		v    *string
	}{{"primary", t.PrimaryThumbprint}, {"secondary", t.SecondaryThumbprint}} {
		if p.v == nil || *p.v == "" {
			continue
		}
		if _, err := wire.NormalizeThumbprint(*p.v); err != nil {
			return fmt.Errorf("%w: %s thumbprint: %v", ErrInvalid, p.name, err)
		}
	}
	return nil
}

// normalizedThumbprints is what a device of a certificate type stores:
// for selfSigned the thumbprints in lower-case hex without colons (absent
// ones nil), for certificateAuthority none, since its CA vouches for it.
// The caller has run validateThumbprints.
func normalizedThumbprints(a wire.Authentication) *wire.X509Thumbprint {
	if a.Type != wire.AuthSelfSigned || a.X509Thumbprint == nil {
		return nil
	}
	norm := func(p *string) *string {
		if p == nil || *p == "" {
			return nil
		}
		s, _ := wire.NormalizeThumbprint(*p)
		return &s
	}
	out := &wire.X509Thumbprint{
		PrimaryThumbprint:   norm(a.X509Thumbprint.PrimaryThumbprint),
		SecondaryThumbprint: norm(a.X509Thumbprint.SecondaryThumbprint),
	}
	if out.PrimaryThumbprint == nil && out.SecondaryThumbprint == nil {
		return nil
	}
	return out
}
