// Package console is the hub's web console: plain HTML, CSS and
// JavaScript modules embedded in the binary and served at /console/ on the
// hub's HTTPS listener, so a hub without internet access serves all of it
// and there is nothing to build. The console is a client of the hub's REST
// API like the tether CLI: it signs its own SAS tokens in the browser, from
// a policy's key kept in the tab's session storage or from a short-lived
// token handed over in the URL's fragment (tether console). The hub
// checks every call exactly as it checks the CLI's.
//
// What this package adds is what a browser needs to run such a client
// safely: a Content-Security-Policy that allows no inline script or style,
// no eval and no other origin, headers that keep the pages out of frames
// and caches, and no cookie at all, so there is no CSRF surface.
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// CSP is the Content-Security-Policy of every answer: the console's own
// files and the hub's own API, nothing inline, nothing evaluated, no
// frames, no forms posted anywhere.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Prefix is where the hub serves the console.
const Prefix = "/console/"

// Handler serves the console's files under Prefix, with the console's
// security headers.
func Handler() http.Handler {
	files, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embed directive names the folder: cannot fail
	}
	etags := make(map[string]string)
	_ = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags[p] = `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
		return nil
	})
	fileServer := http.StripPrefix(Prefix, http.FileServerFS(files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		// Revalidated on each load (the ETag makes that cheap), so a
		// browser never runs one hub version's scripts against another's.
		h.Set("Cache-Control", "no-cache")
		name := strings.TrimPrefix(path.Clean(r.URL.Path), strings.TrimSuffix(Prefix, "/"))
		name = strings.TrimPrefix(name, "/")
		if name == "" {
			name = "index.html"
		}
		tag, ok := etags[name]
		if !ok {
			http.Error(w, "no such page of the console", http.StatusNotFound)
			return
		}
		h.Set("ETag", tag)
		if name == "index.html" && r.URL.Path != Prefix {
			// FileServer would redirect /console/index.html to /console/;
			// serve the one page under one name.
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		fileServer.ServeHTTP(w, r)
	})
}
