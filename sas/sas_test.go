package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testKey = "c2VjcmV0LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OQ=="

// azureStyle builds a token the way a given SDK does: the C SDK signs a raw
// sr, Node a URL-encoded one and puts skn before se.
func azureStyle(t *testing.T, sr string, encode bool, skn string, se int64, lowerEscapes bool) string {
	t.Helper()
	k, _ := base64.StdEncoding.DecodeString(testKey)
	if encode {
		sr = url.QueryEscape(sr)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(sr + "\n" + strconv.FormatInt(se, 10)))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(m.Sum(nil)))
	if lowerEscapes {
		sig = lowerPercent(sig)
	}
	s := Prefix + "sr=" + sr + "&sig=" + sig
	if skn != "" {
		s += "&skn=" + skn
	}
	return s + "&se=" + strconv.FormatInt(se, 10)
}

func lowerPercent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			b.WriteString("%" + strings.ToLower(s[i+1:i+3]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestRoundTrip(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	tok, err := New("127.0.0.1:18443/devices/dev 1", testKey, "", exp)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(testKey, time.Now()); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if p.Resource != "127.0.0.1:18443/devices/dev 1" || p.KeyName != "" || p.Expiry.Unix() != exp.Unix() {
		t.Fatalf("parsed %+v", p)
	}
	if !p.ResourceIs([]string{"127.0.0.1"}, "/devices/dev 1") {
		t.Fatal("resource with port should match the bare host")
	}
}

func TestAzureVariants(t *testing.T) {
	se := time.Now().Add(time.Hour).Unix()
	for name, tok := range map[string]string{
		"c-raw-sr":          azureStyle(t, "127.0.0.1/devices/dev1", false, "", se, false),
		"node-encoded-sr":   azureStyle(t, "127.0.0.1/devices/dev1", true, "", se, false),
		"lowercase-escapes": azureStyle(t, "127.0.0.1/devices/dev1", true, "", se, true),
	} {
		t.Run(name, func(t *testing.T) {
			p, err := ParseToken(tok)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Verify(testKey, time.Now()); err != nil {
				t.Fatal(err)
			}
			if !p.ResourceIs([]string{"127.0.0.1"}, "/devices/dev1") {
				t.Fatalf("resource %q", p.Resource)
			}
		})
	}
	svc := azureStyle(t, "hub.example", true, "service", se, false)
	p, err := ParseToken(svc)
	if err != nil {
		t.Fatal(err)
	}
	if p.KeyName != "service" || !p.ResourceIs([]string{"HUB.example"}, "") {
		t.Fatalf("service token %+v", p)
	}
	if p.ResourceIs([]string{"hub.example"}, "/devices/x") || p.ResourceIs([]string{"hub.example.evil"}, "") {
		t.Fatal("resource matched what it does not name")
	}
}

func TestVerifyFailures(t *testing.T) {
	past := time.Now().Add(-time.Minute)
	tok, _ := New("h/devices/d", testKey, "", past)
	p, err := ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(testKey, time.Now()); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token: %v", err)
	}
	other := base64.StdEncoding.EncodeToString([]byte("another key entirely"))
	if err := p.Verify(other, past.Add(-time.Hour)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("wrong key: %v", err)
	}
	// A token whose sr was changed after signing must fail.
	tok2, _ := New("h/devices/d", testKey, "", time.Now().Add(time.Hour))
	forged := strings.Replace(tok2, "sr=h%2Fdevices%2Fd", "sr=h%2Fdevices%2Fe", 1)
	p2, err := ParseToken(forged)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Verify(testKey, time.Now()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged sr: %v", err)
	}
}

func TestParseMalformed(t *testing.T) {
	for _, s := range []string{
		"",
		"sr=a&sig=b&se=1",
		Prefix + "sr=a&se=1",
		Prefix + "sr=a&sig=AAAA&se=1",
		Prefix + "sr=a&sig=%zz&se=1",
		Prefix + "sr=a&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(make([]byte, 32))) + "&se=soon",
		Prefix + "sr=a&sr=b&sig=x&se=1",
		Prefix + "srsig",
	} {
		if _, err := ParseToken(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseToken(%q) = %v, want ErrMalformed", s, err)
		}
	}
}

func TestConnectionString(t *testing.T) {
	c, err := ParseConnectionString("HostName=127.0.0.1:18443;DeviceId=dev1;SharedAccessKey=" + testKey)
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsDevice() || c.Host() != "127.0.0.1" || c.Address() != "127.0.0.1:18443" || c.Resource() != "127.0.0.1:18443/devices/dev1" {
		t.Fatalf("%+v", c)
	}
	back, err := ParseConnectionString(c.String())
	if err != nil || back != c {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	s, err := ParseConnectionString("HostName=hub.example;SharedAccessKeyName=service;SharedAccessKey=" + testKey)
	if err != nil {
		t.Fatal(err)
	}
	if s.IsDevice() || s.Address() != "hub.example:443" || s.Resource() != "hub.example" {
		t.Fatalf("%+v", s)
	}
	tok, err := s.Token(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseToken(tok)
	if err != nil || p.KeyName != "service" || p.Verify(testKey, time.Now()) != nil {
		t.Fatalf("service token %+v %v", p, err)
	}
	for _, bad := range []string{
		"",
		"HostName=h;DeviceId=d",
		"DeviceId=d;SharedAccessKey=" + testKey,
		"HostName=h;SharedAccessKey=" + testKey,
		"HostName=h;DeviceId=d;SharedAccessKeyName=p;SharedAccessKey=" + testKey,
		"HostName=h;DeviceId=d;SharedAccessKey=not base64!",
		"HostName=h;garbage;SharedAccessKey=" + testKey,
	} {
		if _, err := ParseConnectionString(bad); !errors.Is(err, ErrConnectionString) {
			t.Errorf("ParseConnectionString(%q) = %v", bad, err)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	tok, _ := New("h/devices/d", testKey, "p", time.Unix(2e9, 0))
	f.Add(tok)
	f.Add(Prefix + "sr=&sig=&se=")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseToken(s)
		if err == nil {
			_ = p.Verify(testKey, time.Now())
			_ = p.ResourceIs([]string{"h"}, "/devices/d")
		}
	})
}

func FuzzParseConnectionString(f *testing.F) {
	f.Add("HostName=h:1;DeviceId=d;SharedAccessKey=" + testKey)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConnectionString(s)
		if err == nil {
			_ = c.Address()
			_, _ = c.Token(time.Minute)
		}
	})
}
