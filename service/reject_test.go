package service

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/tether-io/tether/wire"
)

// A rejection's reason comes from the hub's device-status header, on the
// POST's answer as on the one-request opening's; an answer without it (an
// Azure hub's, an older Tether's) is a plain ErrRejected.
func TestOpenStreamRejectReasons(t *testing.T) {
	cases := []struct {
		header string
		status int
		want   error // besides ErrRejected; nil for none
	}{
		{"400", 400, ErrNotAllowed},
		{"502", 502, ErrTargetUnreachable},
		{"503", 503, ErrTargetUnreachable},
		{"504", 504, ErrTargetUnreachable},
		{"403", 403, nil},
		{"", 0, nil},
		{"not a number", 0, nil},
	}
	for _, form := range []string{"one request", "POST"} {
		f := newFakeHub(t)
		c := f.client(t, Options{})
		for _, tc := range cases {
			f.handle(func(w http.ResponseWriter, r *http.Request) {
				if form == "POST" && r.Method == http.MethodGet {
					http.NotFound(w, r) // a hub without the one-request opening
					return
				}
				if r.Method == http.MethodGet {
					w.Header().Set(wire.HeaderOneRequest, "1")
				}
				w.Header().Set(wire.HeaderIsAccepted, "False")
				if tc.header != "" {
					w.Header().Set(wire.HeaderDeviceStatus, tc.header)
				}
			})
			_, err := c.OpenStream(context.Background(), "dev1", "ssh")
			var re *RejectError
			if !errors.As(err, &re) || re.Status != tc.status || !errors.Is(err, ErrRejected) {
				t.Fatalf("%s, header %q: err = %v, want a RejectError with status %d", form, tc.header, err, tc.status)
			}
			for _, s := range []error{ErrNotAllowed, ErrTargetUnreachable} {
				if errors.Is(err, s) != (s == tc.want) {
					t.Errorf("%s, header %q: errors.Is(%v, %v) = %v", form, tc.header, err, s, !(s == tc.want))
				}
			}
			if (tc.status == 0) != (re.Reason == "") || !strings.Contains(err.Error(), "stream rejected by the device") {
				t.Errorf("%s, header %q: %q, reason %q", form, tc.header, err, re.Reason)
			}
		}
	}
}

func TestRejectBusy(t *testing.T) {
	e := rejectStatus(wire.AnswerBusy)
	if !errors.Is(e, ErrDeviceBusy) || !errors.Is(e, ErrRejected) || errors.Is(e, ErrNotAllowed) {
		t.Fatalf("%v: want ErrRejected and ErrDeviceBusy alone", e)
	}
}
