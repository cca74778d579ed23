package main

import (
	"strings"
	"testing"
)

// The agent takes streams on a session unless --no-sessions or
// TETHER_SESSIONS=0 says otherwise; a value it cannot read is an error
// naming the variable, not a silent default.
func TestAgentSessionsOn(t *testing.T) {
	for _, tc := range []struct {
		flag bool
		env  string
		want bool
	}{
		{false, "", true},
		{false, "1", true},
		{false, "true", true},
		{false, " On ", true},
		{false, "0", false},
		{false, "false", false},
		{false, "off", false},
		{true, "", false},
		{true, "1", false},
	} {
		got, err := sessionsOn(tc.flag, tc.env)
		if err != nil || got != tc.want {
			t.Errorf("--no-sessions=%v TETHER_SESSIONS=%q: %v, %v; want %v", tc.flag, tc.env, got, err, tc.want)
		}
	}
	if _, err := sessionsOn(false, "nope"); err == nil || !strings.Contains(err.Error(), "TETHER_SESSIONS") {
		t.Errorf("TETHER_SESSIONS=nope: %v, want an error naming the variable", err)
	}
}
