package cluster

import (
	"encoding/base64"
	"errors"
)

// ErrSubjectToken is returned by ParseSubjectToken for text SubjectToken
// cannot have produced.
var ErrSubjectToken = errors.New("cluster: not a subject token")

// tokenEncoding is base64url without padding: its alphabet (A-Z a-z 0-9 - _)
// is safe both as a NATS subject token and as a JetStream KV key, and Strict
// makes decoding reject non-canonical padding bits.
var tokenEncoding = base64.RawURLEncoding.Strict()

// SubjectToken encodes an arbitrary string (a device id may hold . * > and
// other characters with a meaning in subjects) as one NATS subject token and
// KV key. The empty string encodes to the empty string, which is not a valid
// token: callers reject empty ids first.
func SubjectToken(s string) string {
	return tokenEncoding.EncodeToString([]byte(s))
}

// ParseSubjectToken reverses SubjectToken.
func ParseSubjectToken(tok string) (string, error) {
	b, err := tokenEncoding.DecodeString(tok)
	// The decoder skips CR and LF even in strict mode; re-encoding catches
	// that and keeps the mapping one-to-one.
	if err != nil || tokenEncoding.EncodeToString(b) != tok {
		return "", ErrSubjectToken
	}
	return string(b), nil
}
