package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestStreamRequestTopic(t *testing.T) {
	r := StreamRequest{Name: "ssh", RID: "42", URL: "wss://127.0.0.1:18443/bridges/h/dev%201/ssh/abc", Token: "TOKEN-abc_123"}
	topic := r.Topic()
	// Five levels before the '?', as the C SDK requires.
	path, _, _ := strings.Cut(topic, "?")
	if n := strings.Count(path, "/") + 1; n != 5 {
		t.Fatalf("topic %q has %d levels before '?', want 5", topic, n)
	}
	back, err := ParseStreamRequest(topic)
	if err != nil {
		t.Fatal(err)
	}
	if back != r {
		t.Fatalf("round trip: %+v != %+v", back, r)
	}
	for _, bad := range []string{
		"$iothub/streams/res/200/?$rid=1",
		"$iothub/streams/POST//?$rid=1&$url=u&$auth=a",
		"$iothub/streams/POST/ssh/?$rid=1&$url=u",
		"$iothub/streams/POST/ssh?$rid=1&$url=u&$auth=a",
		"$iothub/streams/POST/ssh/?$rid=1&$url=%zz&$auth=a",
	} {
		if _, err := ParseStreamRequest(bad); !errors.Is(err, ErrTopic) {
			t.Errorf("ParseStreamRequest(%q) = %v", bad, err)
		}
	}
}

func TestResponseTopic(t *testing.T) {
	status, rid, err := ParseResponse(ResponseTopic(200, "7"))
	if err != nil || status != 200 || rid != "7" {
		t.Fatalf("%d %q %v", status, rid, err)
	}
	for _, bad := range []string{"$iothub/streams/res/abc/?$rid=1", "$iothub/streams/res/200/?x=1", "$iothub/streams/res/200", "other"} {
		if _, _, err := ParseResponse(bad); !errors.Is(err, ErrTopic) {
			t.Errorf("ParseResponse(%q) = %v", bad, err)
		}
	}
}

func TestBridgePath(t *testing.T) {
	p := BridgePath("hub", "dev/1 ü", "ssh", "s1")
	hub, dev, name, id, err := ParseBridgePath(p)
	if err != nil || hub != "hub" || dev != "dev/1 ü" || name != "ssh" || id != "s1" {
		t.Fatalf("%q: %q %q %q %q %v", p, hub, dev, name, id, err)
	}
	if _, _, _, _, err := ParseBridgePath("/bridges/a/b/c"); err == nil {
		t.Fatal("short path accepted")
	}
}

func TestErrorBody(t *testing.T) {
	code, msg := DecodeError(EncodeError(CodeNotOnline, "Device dev1 is not online"))
	if code != CodeNotOnline || msg != "Device dev1 is not online" {
		t.Fatalf("%d %q", code, msg)
	}
	if code, msg := DecodeError([]byte("plain text")); code != 0 || msg != "plain text" {
		t.Fatalf("%d %q", code, msg)
	}
}

func FuzzParseTopics(f *testing.F) {
	f.Add(StreamRequest{Name: "a", RID: "1", URL: "wss://x/y", Token: "t"}.Topic())
	f.Add(ResponseTopic(400, "9"))
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := ParseStreamRequest(s); err == nil {
			if _, err := ParseStreamRequest(r.Topic()); err != nil {
				t.Fatalf("reformatted %q does not parse: %v", r.Topic(), err)
			}
		}
		_, _, _ = ParseResponse(s)
		_, _, _, _, _ = ParseBridgePath(s)
	})
}

// TestProtocolNames pins the names Azure's clients and older Tether ends
// send and expect: a constant changed by mistake would change the wire
// for every package at once, and no test comparing one package with
// another would see it.
func TestProtocolNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{PathMQTTWebSocket, "/$iothub/websocket"},
		{PathBridges, "/bridges/"},
		{SubprotocolMQTT, "mqtt"},
		{SubprotocolStream, "tether-stream.v1"},
		{SubprotocolStreamReuse, "tether-stream.v2"},
		{TopicRequestFilter, "$iothub/streams/POST/#"},
		{TopicResponseFilter, "$iothub/streams/res/#"},
		{TopicRequestPrefix, "$iothub/streams/POST/"},
		{TopicResponsePrefix, "$iothub/streams/res/"},
		{TopicTakenOver, "$tether/session/taken-over"},
		{HeaderConnectTimeout, "iothub-streaming-connect-timeout-in-seconds"},
		{HeaderResponseTimeout, "iothub-streaming-response-timeout-in-seconds"},
		{HeaderIsAccepted, "iothub-streaming-is-accepted"},
		{HeaderURL, "iothub-streaming-url"},
		{HeaderAuthToken, "iothub-streaming-auth-token"},
		{HeaderErrorCode, "iothub-errorcode"},
		{HeaderOneRequest, "tether-stream-one-request"},
		{HeaderDeviceStatus, "tether-stream-device-status"},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
	if got, want := BridgePath("h", "dev 1", "ssh", "id"), "/bridges/h/dev%201/ssh/id"; got != want {
		t.Errorf("BridgePath = %q, want %q", got, want)
	}
	if got, want := ResponseTopic(AnswerAccept, "7"), "$iothub/streams/res/200/?$rid=7"; got != want {
		t.Errorf("ResponseTopic = %q, want %q", got, want)
	}
	r := StreamRequest{Name: "ssh", RID: "1", URL: "wss://h/bridges/h/d/ssh/i", Token: "t"}
	if got, want := r.Topic(), "$iothub/streams/POST/ssh/?$rid=1&$url=wss%3A%2F%2Fh%2Fbridges%2Fh%2Fd%2Fssh%2Fi&$auth=t"; got != want {
		t.Errorf("Topic = %q, want %q", got, want)
	}
}
