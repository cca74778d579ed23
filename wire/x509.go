package wire

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Authentication types of a device document (authentication.type), as
// Azure names them.
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
)

// CodeCertificateNotFound is the error code of an answer about a CA
// certificate name the hub does not hold.
const CodeCertificateNotFound = 404004

// IsX509 reports whether an authentication type is one of the two that
// authenticate with a TLS client certificate instead of a key.
func IsX509(authType string) bool {
	return authType == AuthSelfSigned || authType == AuthCertificateAuthority
}

// ErrThumbprint reports a thumbprint that is not a SHA-256 (or SHA-1)
// fingerprint in hex.
var ErrThumbprint = errors.New("wire: thumbprint must be 64 hex digits (SHA-256) or 40 (SHA-1)")

// NormalizeThumbprint turns a certificate fingerprint as people copy it
// (openssl prints "AB:CD:..", Windows "abcd..", some tools add spaces)
// into the form the registry stores and compares: lower-case hex without
// separators. It accepts a SHA-256 fingerprint (64 digits), and a SHA-1 one
// (40 digits) because Azure's tools still produce those.
func NormalizeThumbprint(s string) (string, error) {
	var b strings.Builder
	b.Grow(64)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			b.WriteByte(c)
		case c >= 'A' && c <= 'F':
			b.WriteByte(c + ('a' - 'A'))
		case c == ':' || c == ' ' || c == '\t':
			// Separators carry nothing; a digit count checks the rest.
		default:
			return "", fmt.Errorf("%w: unexpected character %q", ErrThumbprint, c)
		}
		if b.Len() > 64 {
			break
		}
	}
	if n := b.Len(); n != 64 && n != 40 {
		return "", fmt.Errorf("%w: got %d hex digits", ErrThumbprint, n)
	}
	return b.String(), nil
}

// Thumbprints are the fingerprints of a DER certificate a stored
// thumbprint may match: SHA-256 and SHA-1, lower-case hex.
func Thumbprints(der []byte) (sha256Hex, sha1Hex string) {
	s2 := sha256.Sum256(der)
	s1 := sha1.Sum(der)
	return hex.EncodeToString(s2[:]), hex.EncodeToString(s1[:])
}

// CACertificate is a CA certificate uploaded to the hub
// (PUT /certificates/{name}): devices of type certificateAuthority
// authenticate with certificates it signed.
type CACertificate struct {
	Name        string    `json:"name"`
	Subject     string    `json:"subject"`
	Thumbprint  string    `json:"thumbprint"` // SHA-256 of the DER, lower-case hex
	Expiry      time.Time `json:"expiry"`
	Created     time.Time `json:"created"`
	Certificate string    `json:"certificate"` // PEM
}
