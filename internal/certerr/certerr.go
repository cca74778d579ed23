// Package certerr says why a hub's TLS certificate failed verification, in
// words that name the cause: a name the certificate does not hold (and
// the names it does), an authority the client does not trust, a
// certificate out of its validity. Go's own messages for the three read
// alike to someone setting up a hub, and each takes a different fix on a
// different machine.
//
// The SDKs and the CLI share the diagnosis; each says the fix in its own
// terms: an SDK names its Options fields (SDKFix), the CLI its flags.
package certerr

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Cause is what is wrong with the certificate.
type Cause int

// Causes of a failed verification.
const (
	UnknownAuthority Cause = iota + 1 // signed by a CA the client does not trust
	WrongName                         // does not hold the name the client asked for
	Expired                           // past its NotAfter
	NotYetValid                       // before its NotBefore
	Invalid                           // any other verification failure
)

// Failure is a failed verification of a hub's certificate.
type Failure struct {
	Cause Cause
	// Host is the name the client asked for (WrongName).
	Host string
	// Names are the DNS names and IP addresses the certificate holds
	// (WrongName).
	Names []string
	// Issuer is the subject of the authority that signed the certificate
	// (UnknownAuthority).
	Issuer string
	// NotBefore and NotAfter bound the certificate's validity (Expired,
	// NotYetValid).
	NotBefore, NotAfter time.Time
	// Err is the verification error itself.
	Err error
}

// Find returns the verification failure in err's chain, if there is one.
func Find(err error) (*Failure, bool) {
	var (
		he  x509.HostnameError
		ua  x509.UnknownAuthorityError
		ci  x509.CertificateInvalidError
		cve *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &he):
		f := &Failure{Cause: WrongName, Host: he.Host, Err: he}
		if c := he.Certificate; c != nil {
			f.Names = append(f.Names, c.DNSNames...)
			for _, ip := range c.IPAddresses {
				f.Names = append(f.Names, ip.String())
			}
		}
		return f, true
	case errors.As(err, &ua):
		f := &Failure{Cause: UnknownAuthority, Err: ua}
		if ua.Cert != nil {
			f.Issuer = ua.Cert.Issuer.String()
		}
		return f, true
	case errors.As(err, &ci):
		f := &Failure{Cause: Invalid, Err: ci}
		if ci.Reason == x509.Expired && ci.Cert != nil {
			// Go reports both ends of the validity as Expired.
			f.Cause, f.NotBefore, f.NotAfter = Expired, ci.Cert.NotBefore, ci.Cert.NotAfter
			if time.Now().Before(ci.Cert.NotBefore) {
				f.Cause = NotYetValid
			}
		}
		return f, true
	case errors.As(err, &cve):
		return &Failure{Cause: Invalid, Err: cve.Err}, true
	}
	return nil, false
}

// String says what is wrong, without the fix: "certificate not trusted:
// issued by CN=Tether CA, an authority not trusted here", "name "hub.lan"
// not in the certificate, which holds 127.0.0.1 and localhost",
// "certificate expired at ...".
func (f *Failure) String() string {
	switch f.Cause {
	case UnknownAuthority:
		return "certificate not trusted: " + f.issued()
	case WrongName:
		return fmt.Sprintf("name %q not in the certificate, which holds %s", f.Host, f.holds())
	case Expired:
		return fmt.Sprintf("certificate expired at %s (this machine's clock says %s)", stamp(f.NotAfter), stamp(time.Now()))
	case NotYetValid:
		return fmt.Sprintf("certificate not valid before %s (this machine's clock says %s)", stamp(f.NotBefore), stamp(time.Now()))
	}
	return fmt.Sprintf("certificate not valid: %v", f.Err)
}

// issued names the authority that was not trusted.
func (f *Failure) issued() string {
	if f.Issuer == "" {
		return "issued by an unknown authority"
	}
	return "issued by " + f.Issuer + ", an authority not trusted here"
}

// holds lists the certificate's names for a sentence.
func (f *Failure) holds() string {
	switch n := len(f.Names); n {
	case 0:
		return "no name at all"
	case 1:
		return f.Names[0]
	default:
		return strings.Join(f.Names[:n-1], ", ") + " and " + f.Names[n-1]
	}
}

// SDKFix is the fix in the terms of a Go SDK, whose Options.TLSConfig
// decides what is trusted and which name is asked for.
func (f *Failure) SDKFix() string {
	switch f.Cause {
	case UnknownAuthority:
		return "set Options.TLSConfig.RootCAs to a pool holding the hub's CA"
	case WrongName:
		return "give the connection string's HostName, or Options.TLSConfig.ServerName, a name the certificate holds, or the hub a certificate for this name"
	case Expired, NotYetValid:
		return "the hub needs a certificate valid now, or this machine's clock is wrong"
	}
	return "the hub needs a certificate that verifies"
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
