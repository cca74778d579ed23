package hub_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tether-io/tether/wire"
)

// TestMalformedPolicyNames sends every policy route a malformed policy
// name: 400 ArgumentInvalid naming what is wrong, after the token (401
// without one, whatever the name), and nothing logged above debug.
func TestMalformedPolicyNames(t *testing.T) {
	h := startBadInputHub(t)
	routes := []struct{ method, path, body string }{
		{http.MethodGet, "/policies/%s", ""},
		{http.MethodPost, "/policies/%s/listkeys", ""},
		{http.MethodPut, "/policies/%s", `{"rights": "ServiceConnect"}`},
		{http.MethodDelete, "/policies/%s", ""},
		{http.MethodPost, "/policies/%s/renewkey?key=primary", ""},
	}
	names := []struct{ what, segment, msg string }{
		{"with ;", "bad;p", "policy name"},
		{"with /", "bad%2Fp", "policy name"},
		{"not ASCII", "p%C3%A9", "policy name"},
		{"with NUL", "p%00", "policy name"},
		{"of 65", strings.Repeat("p", 65), "policy name must be 1 to 64"},
	}
	do := func(method, path, body string, auth bool) (int, string, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, h.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth {
			req.Header.Set("Authorization", h.token)
		}
		res, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		got, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header.Get(wire.HeaderErrorCode), got
	}
	for _, r := range routes {
		for _, n := range names {
			path := strings.Replace(r.path, "%s", n.segment, 1)
			status, hdr, body := do(r.method, path, r.body, true)
			code, msg := wire.DecodeError(body)
			if status != 400 || hdr != wire.CodeName(wire.CodeBadRequest) || code != wire.CodeBadRequest || !strings.Contains(msg, n.msg) {
				t.Errorf("%s %s (%s): %d %s %d %q; want 400 ArgumentInvalid saying %q", r.method, r.path, n.what, status, hdr, code, msg, n.msg)
			}
			for _, rec := range h.logs.take() {
				t.Errorf("%s %s (%s): logged at %s: %q", r.method, r.path, n.what, rec.Level, rec.Message)
			}
		}
		path := strings.Replace(r.path, "%s", names[0].segment, 1)
		if status, _, _ := do(r.method, path, r.body, false); status != 401 {
			t.Errorf("%s %s without a token: %d, want 401", r.method, path, status)
		}
		h.logs.take() // the failed login, logged at info as always
	}
	// The name at the limit is well formed: unknown, not malformed.
	if status, hdr, _ := do(http.MethodGet, "/policies/"+strings.Repeat("p", 64), "", true); status != 404 || hdr != "PolicyNotFound" {
		t.Errorf("a policy name of 64: %d %s, want 404 PolicyNotFound", status, hdr)
	}
}
