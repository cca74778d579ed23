package sas

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// ErrConnectionString reports a connection string that cannot be used.
var ErrConnectionString = errors.New("sas: bad connection string")

// ConnectionString is a parsed device or service connection string:
//
//	device:  HostName=...;DeviceId=...;SharedAccessKey=...
//	service: HostName=...;SharedAccessKeyName=...;SharedAccessKey=...
//	X.509 device: HostName=...;DeviceId=...;x509=true
//
// HostName may carry a port ("127.0.0.1:18443"). An X.509 device holds no
// key: it authenticates with a TLS client certificate, which the connection
// string does not carry (Azure's form).
type ConnectionString struct {
	HostName            string
	DeviceID            string
	ModuleID            string
	SharedAccessKeyName string
	SharedAccessKey     string
	X509                bool
}

// ParseConnectionString parses s and checks that it names either a device
// or a policy, with a base64 key.
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	s = strings.TrimSpace(s)
	if s == "" {
		return c, fmt.Errorf("%w: empty", ErrConnectionString)
	}
	for part := range strings.SplitSeq(s, ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return c, fmt.Errorf("%w: %q is not key=value", ErrConnectionString, redact(part))
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "hostname":
			c.HostName = v
		case "deviceid":
			c.DeviceID = v
		case "moduleid":
			c.ModuleID = v
		case "sharedaccesskeyname":
			c.SharedAccessKeyName = v
		case "sharedaccesskey":
			c.SharedAccessKey = v
		case "x509":
			x, ok := map[string]bool{"true": true, "false": false}[strings.ToLower(strings.TrimSpace(v))]
			if !ok {
				return c, fmt.Errorf("%w: x509=%q: want true or false", ErrConnectionString, redact(v))
			}
			c.X509 = x
		default:
			// Azure strings may carry GatewayHostName and others Tether
			// has no use for.
		}
	}
	switch {
	case c.HostName == "":
		return c, fmt.Errorf("%w: HostName is missing", ErrConnectionString)
	case c.X509 && (c.DeviceID == "" || c.SharedAccessKeyName != ""):
		return c, fmt.Errorf("%w: x509=true is for a device (DeviceId, no SharedAccessKeyName)", ErrConnectionString)
	case c.X509 && c.SharedAccessKey != "":
		// Which one would authenticate? Azure refuses the mix too.
		return c, fmt.Errorf("%w: x509=true and SharedAccessKey both set", ErrConnectionString)
	case c.X509:
	case c.SharedAccessKey == "":
		return c, fmt.Errorf("%w: SharedAccessKey is missing", ErrConnectionString)
	case c.DeviceID == "" && c.SharedAccessKeyName == "":
		return c, fmt.Errorf("%w: neither DeviceId nor SharedAccessKeyName is set", ErrConnectionString)
	case c.DeviceID != "" && c.SharedAccessKeyName != "":
		return c, fmt.Errorf("%w: both DeviceId and SharedAccessKeyName are set", ErrConnectionString)
	}
	if _, err := base64.StdEncoding.DecodeString(c.SharedAccessKey); err != nil {
		return c, fmt.Errorf("%w: SharedAccessKey is not base64", ErrConnectionString)
	}
	if _, _, err := net.SplitHostPort(c.HostName); err != nil && strings.Contains(c.HostName, ":") && !strings.HasPrefix(c.HostName, "[") {
		return c, fmt.Errorf("%w: HostName %q: %v", ErrConnectionString, c.HostName, err)
	}
	return c, nil
}

func redact(part string) string {
	if len(part) > 16 {
		return part[:16] + "…"
	}
	return part
}

// IsDevice reports whether c names a device rather than an access policy.
func (c ConnectionString) IsDevice() bool { return c.DeviceID != "" }

// Host is HostName without its port.
func (c ConnectionString) Host() string {
	if h, _, err := net.SplitHostPort(c.HostName); err == nil {
		return h
	}
	return strings.Trim(c.HostName, "[]")
}

// Address is HostName as a dialable host:port; the port is 443 when
// HostName carries none.
func (c ConnectionString) Address() string {
	if _, _, err := net.SplitHostPort(c.HostName); err == nil {
		return c.HostName
	}
	return net.JoinHostPort(c.Host(), "443")
}

// Resource is the sr a token for c must name: the host for a policy,
// host/devices/{id} (and /modules/{id}) for a device.
func (c ConnectionString) Resource() string {
	if !c.IsDevice() {
		return c.HostName
	}
	r := c.HostName + "/devices/" + c.DeviceID
	if c.ModuleID != "" {
		r += "/modules/" + c.ModuleID
	}
	return r
}

// ErrNoKey is Token's error for an X.509 connection string, which has no
// key to sign with.
var ErrNoKey = errors.New("sas: an x509 connection string has no key to sign a token with")

// Token signs a token for c valid for ttl.
func (c ConnectionString) Token(ttl time.Duration) (string, error) {
	if c.X509 {
		return "", ErrNoKey
	}
	return New(c.Resource(), c.SharedAccessKey, c.SharedAccessKeyName, time.Now().Add(ttl))
}

// String formats c in the canonical key order.
func (c ConnectionString) String() string {
	var b strings.Builder
	b.WriteString("HostName=" + c.HostName)
	if c.DeviceID != "" {
		b.WriteString(";DeviceId=" + c.DeviceID)
	}
	if c.ModuleID != "" {
		b.WriteString(";ModuleId=" + c.ModuleID)
	}
	if c.SharedAccessKeyName != "" {
		b.WriteString(";SharedAccessKeyName=" + c.SharedAccessKeyName)
	}
	if c.X509 {
		b.WriteString(";x509=true")
		return b.String()
	}
	b.WriteString(";SharedAccessKey=" + c.SharedAccessKey)
	return b.String()
}
