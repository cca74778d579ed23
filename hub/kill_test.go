package hub_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// TestKillRouteAndLogQueryRefusals: DELETE /streams/{id} needs a token
// of a policy with ServiceConnect, a well-formed id, and says so when no
// node holds the stream; GET /streamlogs refuses a malformed after, last
// or follow with 400 and why. Each mistake is the caller's: nothing is
// logged above debug for it.
func TestKillRouteAndLogQueryRefusals(t *testing.T) {
	h := startBadInputHub(t)
	reader, err := h.reg.Policy(t.Context(), "registryRead")
	if err != nil {
		t.Fatal(err)
	}
	readTok, err := sas.New("127.0.0.1", reader.PrimaryKey, reader.Name, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		name, method, path, token string
		status                    int
		code                      string // iothub-errorcode
		msg                       string
	}{
		{"kill: no token", "DELETE", "/streams/ABCDEFGH", "", 401, "IotHubUnauthorizedAccess", "Unauthorized"},
		{"kill: RegistryRead only", "DELETE", "/streams/ABCDEFGH", readTok, 401, "IotHubUnauthorizedAccess", "Unauthorized"},
		{"kill: malformed id", "DELETE", "/streams/bad;id", h.token, 400, "ArgumentInvalid", "is not a stream id"},
		{"kill: over-long id", "DELETE", "/streams/" + strings.Repeat("A", 129), h.token, 400, "ArgumentInvalid", "is not a stream id"},
		{"kill: no such stream", "DELETE", "/streams/ABCDEFGH234567", h.token, 404, "StreamNotFound", "no node holds an open stream ABCDEFGH234567"},
		{"logs: last 0", "GET", "/streamlogs?last=0", h.token, 400, "ArgumentInvalid", "from 1 to 100000"},
		{"logs: last too many", "GET", "/streamlogs?last=100001", h.token, 400, "ArgumentInvalid", "from 1 to 100000"},
		{"logs: last not a number", "GET", "/streamlogs?last=ten", h.token, 400, "ArgumentInvalid", "last"},
		{"logs: after negative", "GET", "/streamlogs?after=-1", h.token, 400, "ArgumentInvalid", "sequence number"},
		{"logs: follow yes", "GET", "/streamlogs?follow=yes", h.token, 400, "ArgumentInvalid", "neither true nor false"},
		{"logs: last and after", "GET", "/streamlogs?last=5&after=3", h.token, 200, "", ""},
	} {
		req, err := http.NewRequestWithContext(t.Context(), r.method, h.url+r.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.token != "" {
			req.Header.Set("Authorization", r.token)
		}
		res, err := h.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		_, msg := wire.DecodeError(body)
		if res.StatusCode != r.status || res.Header.Get(wire.HeaderErrorCode) != r.code || !strings.Contains(msg, r.msg) {
			t.Errorf("%s: %d %s %q, want %d %s with %q", r.name, res.StatusCode, res.Header.Get(wire.HeaderErrorCode), msg, r.status, r.code, r.msg)
		}
		for _, rec := range h.logs.take() {
			if rec.Message != "service authentication failed" {
				t.Errorf("%s: logged %q at %v", r.name, rec.Message, rec.Level)
			}
		}
	}
}
