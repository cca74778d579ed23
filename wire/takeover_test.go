package wire

import "testing"

func TestTakenOverTopic(t *testing.T) {
	for _, by := range []string{"203.0.113.7:51234", "[2001:db8::1]:443", ""} {
		topic := TakenOverTopic(by)
		got, ok := ParseTakenOver(topic)
		if !ok || got != by {
			t.Errorf("ParseTakenOver(%q) = %q, %v; want %q, true", topic, got, ok, by)
		}
	}
	if topic := TakenOverTopic("[2001:db8::1]:443"); topic != "$tether/session/taken-over?by=%5B2001%3Adb8%3A%3A1%5D%3A443" {
		t.Errorf("TakenOverTopic = %q", topic)
	}
	for _, topic := range []string{
		"$tether/session/taken-over-not",
		"$tether/session/taken",
		"$iothub/streams/POST/ssh/?$rid=1&$url=x&$auth=y",
		"",
	} {
		if _, ok := ParseTakenOver(topic); ok {
			t.Errorf("ParseTakenOver(%q) took it for a notice", topic)
		}
	}
	if by, ok := ParseTakenOver(TopicTakenOver); !ok || by != "" {
		t.Errorf("ParseTakenOver(%q) = %q, %v; want a notice without an address", TopicTakenOver, by, ok)
	}
}

func TestIsTetherClient(t *testing.T) {
	for _, tc := range []struct {
		username string
		want     bool
	}{
		{"hub.example/dev1/?api-version=2020-09-30&DeviceClientType=tether-go%2F0.1", true},
		{"hub.example/dev1/mod/?api-version=2020-09-30&DeviceClientType=tether-go/0.2", true},
		{"hub.example/dev1/?api-version=2020-09-30&DeviceClientType=azure-iot-device%2F1.18.0", false},
		{"hub.example/dev1/?api-version=2019-05-30-preview&DeviceClientType=iothubclient%2f1.3.0-public-preview%20(native%3b%20Linux%3b%20x86_64)", false},
		{"hub.example/dev1/?api-version=2020-09-30", false},
		{"hub.example/dev1/", false},
		{"tether-go/0.1", false},
		{"", false},
	} {
		if got := IsTetherClient(tc.username); got != tc.want {
			t.Errorf("IsTetherClient(%q) = %v, want %v", tc.username, got, tc.want)
		}
	}
}
