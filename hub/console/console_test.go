package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tether-io/tether/hub/console"
)

func get(t *testing.T, h http.Handler, path string, header ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// TestHeaders: every answer, a page, a script or a miss, carries the
// console's CSP and the headers that keep it out of frames and sniffing,
// and none sets a cookie.
func TestHeaders(t *testing.T) {
	h := console.Handler()
	for _, path := range []string{"/console/", "/console/js/app.js", "/console/style.css", "/console/nothing.js", "/console/../api"} {
		res := get(t, h, path)
		for k, want := range map[string]string{
			"Content-Security-Policy": console.CSP,
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := res.Header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
		if c := res.Header.Values("Set-Cookie"); len(c) > 0 {
			t.Errorf("%s sets a cookie: %q", path, c)
		}
	}
	for _, directive := range []string{"script-src 'self'", "style-src 'self'", "default-src 'none'", "frame-ancestors 'none'", "connect-src 'self'"} {
		if !strings.Contains(console.CSP, directive) {
			t.Errorf("CSP lacks %s", directive)
		}
	}
	if strings.Contains(console.CSP, "unsafe") {
		t.Errorf("CSP allows something unsafe: %s", console.CSP)
	}
}

func TestServes(t *testing.T) {
	h := console.Handler()
	for path, want := range map[string]struct {
		status int
		ctype  string
	}{
		"/console/":                {200, "text/html; charset=utf-8"},
		"/console/js/app.js":       {200, "text/javascript; charset=utf-8"},
		"/console/style.css":       {200, "text/css; charset=utf-8"},
		"/console/index.html":      {301, ""},
		"/console/missing.html":    {404, ""},
		"/console/js/":             {404, ""},
		"/console/js/../style.css": {200, "text/css; charset=utf-8"},
	} {
		res := get(t, h, path)
		if res.StatusCode != want.status {
			t.Errorf("%s: %d, want %d", path, res.StatusCode, want.status)
		}
		if want.ctype != "" && res.Header.Get("Content-Type") != want.ctype {
			t.Errorf("%s: Content-Type %q, want %q", path, res.Header.Get("Content-Type"), want.ctype)
		}
	}
	// A browser revalidates each load (no-cache) and the ETag spares it
	// the body.
	res := get(t, h, "/console/js/app.js")
	tag := res.Header.Get("ETag")
	if tag == "" || res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("ETag %q, Cache-Control %q", tag, res.Header.Get("Cache-Control"))
	}
	if res := get(t, h, "/console/js/app.js", "If-None-Match", tag); res.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the ETag: %d, want 304", res.StatusCode)
	}
}

// TestNoInlineCode checks the files against what the CSP refuses, so
// that a change that would break the console under it fails here and not
// in a browser: no inline script, style or event handler in the page, and
// no script that builds HTML from strings or evaluates code (a device id
// or stream name holding HTML must stay text).
func TestNoInlineCode(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("assets", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`<script(?:\s[^>]*)?>\s*[^<\s]`, `<style`, `\sstyle=`, `\son[a-z]+=`, `javascript:`} {
		if m := regexp.MustCompile(`(?i)` + re).Find(page); m != nil {
			t.Errorf("index.html: %q: inline code the CSP refuses", m)
		}
	}
	// Every file the page names is there.
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"#:]+)"`).FindAllSubmatch(page, -1) {
		if _, err := os.Stat(filepath.Join("assets", string(m[1]))); err != nil {
			t.Errorf("index.html names %s: %v", m[1], err)
		}
	}
	forbidden := regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setTimeout\(['"` + "`" + `]|\.style\.|setAttribute\('style`)
	n := 0
	err = fs.WalkDir(os.DirFS("assets"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(p, ".js") {
			return err
		}
		n++
		b, err := fs.ReadFile(os.DirFS("assets"), p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			// The one style the console sets itself: xterm.js's own, which
			// the Terminal page routes through the CSSOM (terminal.js).
			if p == "js/terminal.js" && strings.HasSuffix(line, "// xterm.js's style attribute, through the CSSOM") {
				continue
			}
			if m := forbidden.FindString(line); m != "" {
				t.Errorf("%s:%d: %s", p, i+1, m)
			}
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("walked %d scripts: %v", n, err)
	}
}

// TestOnlyEmbedded: what the handler serves is the embedded copy of
// assets/, byte for byte.
func TestOnlyEmbedded(t *testing.T) {
	h := console.Handler()
	want, err := os.ReadFile(filepath.Join("assets", "js", "auth.js"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(get(t, h, "/console/js/auth.js").Body)
	if err != nil || string(got) != string(want) {
		t.Fatalf("served auth.js differs from assets/js/auth.js (%v)", err)
	}
}
