package sas

import (
	"errors"
	"testing"
	"time"
)

func TestConnectionStringX509(t *testing.T) {
	c, err := ParseConnectionString("HostName=hub.example:8443;DeviceId=cam1;x509=true")
	if err != nil {
		t.Fatal(err)
	}
	if !c.X509 || !c.IsDevice() || c.SharedAccessKey != "" || c.DeviceID != "cam1" {
		t.Fatalf("%+v", c)
	}
	if got := c.String(); got != "HostName=hub.example:8443;DeviceId=cam1;x509=true" {
		t.Fatalf("String() = %q", got)
	}
	if back, err := ParseConnectionString(c.String()); err != nil || back != c {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if _, err := c.Token(time.Minute); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Token() = %v, want ErrNoKey", err)
	}
	// Azure writes the key in any case and the value too.
	if c, err := ParseConnectionString("HostName=h;DeviceId=d;X509=True"); err != nil || !c.X509 {
		t.Fatalf("X509=True: %+v %v", c, err)
	}
	// x509=false is a SAS string like any other.
	if c, err := ParseConnectionString("HostName=h;DeviceId=d;x509=false;SharedAccessKey=" + testKey); err != nil || c.X509 {
		t.Fatalf("x509=false: %+v %v", c, err)
	}
	for _, bad := range []string{
		"HostName=h;DeviceId=d;x509=false",
		"HostName=h;DeviceId=d;x509=yes",
		"HostName=h;x509=true",
		"HostName=h;SharedAccessKeyName=p;x509=true",
		"HostName=h;DeviceId=d;x509=true;SharedAccessKey=" + testKey,
		"DeviceId=d;x509=true",
	} {
		if _, err := ParseConnectionString(bad); !errors.Is(err, ErrConnectionString) {
			t.Errorf("ParseConnectionString(%q) = %v", bad, err)
		}
	}
}
