// Package sas reads and writes the shared access signatures and connection
// strings of the device-streams protocol. The hub verifies tokens with it and
// both SDKs sign with it, so there is exactly one implementation of the
// signing rules in Tether.
//
// The rules follow the Azure SDKs, which disagree in small ways that a
// compatible hub must absorb: fields come in any order, percent-escapes come in
// either case, and the signed resource is sometimes URL-encoded and sometimes
// raw. A token is therefore verified over its sr field exactly as it appears.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every token.
const Prefix = "SharedAccessSignature "

// Errors returned by ParseToken and Token.Verify.
var (
	ErrMalformed    = errors.New("sas: malformed token")
	ErrExpired      = errors.New("sas: token expired")
	ErrBadSignature = errors.New("sas: signature does not match")
)

// Token is a parsed shared access signature.
type Token struct {
	// RawResource is the sr field exactly as it appears in the token; the
	// signature covers these bytes.
	RawResource string
	// Resource is RawResource with percent-escapes decoded.
	Resource string
	// Signature is the decoded HMAC-SHA256.
	Signature []byte
	Expiry    time.Time
	// KeyName is the skn field: the access policy of a service token; empty
	// for a device token.
	KeyName string

	rawExpiry string
}

// New returns a token for resource signed with the base64 key, valid until
// expiry. keyName is the policy name for service tokens and empty for devices.
func New(resource, key, keyName string, expiry time.Time) (string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("sas: key is not base64: %w", err)
	}
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := sign(k, sr, se)
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString("sr=" + sr)
	b.WriteString("&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig)))
	b.WriteString("&se=" + se)
	if keyName != "" {
		b.WriteString("&skn=" + url.QueryEscape(keyName))
	}
	return b.String(), nil
}

func sign(key []byte, sr, se string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(sr + "\n" + se))
	return m.Sum(nil)
}

// ParseToken parses "SharedAccessSignature sr=...&sig=...&se=...[&skn=...]".
// The fields may come in any order.
func ParseToken(s string) (Token, error) {
	var t Token
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), Prefix)
	if !ok {
		return t, fmt.Errorf("%w: missing %q prefix", ErrMalformed, strings.TrimSpace(Prefix))
	}
	var haveSR, haveSig, haveSE bool
	for field := range strings.SplitSeq(rest, "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return t, fmt.Errorf("%w: field without '='", ErrMalformed)
		}
		switch k {
		case "sr":
			if haveSR {
				return t, fmt.Errorf("%w: sr given twice", ErrMalformed)
			}
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return t, fmt.Errorf("%w: sr: %v", ErrMalformed, err)
			}
			t.RawResource, t.Resource, haveSR = v, dec, true
		case "sig":
			if haveSig {
				return t, fmt.Errorf("%w: sig given twice", ErrMalformed)
			}
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return t, fmt.Errorf("%w: sig: %v", ErrMalformed, err)
			}
			sig, err := base64.StdEncoding.DecodeString(dec)
			if err != nil || len(sig) != sha256.Size {
				return t, fmt.Errorf("%w: sig is not a base64 HMAC-SHA256", ErrMalformed)
			}
			t.Signature, haveSig = sig, true
		case "se":
			if haveSE {
				return t, fmt.Errorf("%w: se given twice", ErrMalformed)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return t, fmt.Errorf("%w: se is not a unix time", ErrMalformed)
			}
			t.Expiry, haveSE = time.Unix(n, 0), true
			t.rawExpiry = v
		case "skn":
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return t, fmt.Errorf("%w: skn: %v", ErrMalformed, err)
			}
			t.KeyName = dec
		default:
			// Unknown fields are ignored, as the Azure service does.
		}
	}
	if !haveSR || !haveSig || !haveSE {
		return t, fmt.Errorf("%w: sr, sig and se are required", ErrMalformed)
	}
	return t, nil
}

// Verify checks the signature against the base64 key and the expiry against
// now. It runs in constant time in the signature.
func (t Token) Verify(key string, now time.Time) error {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return fmt.Errorf("sas: key is not base64: %w", err)
	}
	want := sign(k, t.RawResource, t.rawExpiry)
	if !hmac.Equal(want, t.Signature) {
		return ErrBadSignature
	}
	if !now.Before(t.Expiry) {
		return ErrExpired
	}
	return nil
}

// ResourceIs reports whether the token's resource names host followed by
// path (path empty or starting with "/"). The host may appear with or
// without a port and compares without regard to case (the path exactly), since a
// connection string may carry "HostName=127.0.0.1:18443" while a hub knows
// itself as "127.0.0.1". hosts lists every name the hub answers to.
func (t Token) ResourceIs(hosts []string, path string) bool {
	r := strings.TrimSuffix(t.Resource, "/")
	for _, h := range hosts {
		rest, ok := cutPrefixFold(r, h)
		if !ok {
			continue
		}
		if strings.HasPrefix(rest, ":") {
			i := strings.IndexByte(rest, '/')
			port := rest[1:]
			if i >= 0 {
				port = rest[1:i]
				rest = rest[i:]
			} else {
				rest = ""
			}
			if _, err := strconv.ParseUint(port, 10, 16); err != nil {
				continue
			}
		}
		if rest == path {
			return true
		}
	}
	return false
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}
