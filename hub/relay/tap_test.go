package relay

import (
	"io"
	"sync"
	"testing"
)

// recordingTap keeps what it saw, by direction.
type recordingTap struct {
	mu       sync.Mutex
	toDevice []byte
	toSvc    []byte
	closed   int
}

func (r *recordingTap) Data(toDevice bool, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if toDevice {
		r.toDevice = append(r.toDevice, p...)
	} else {
		r.toSvc = append(r.toSvc, p...)
	}
}

func (r *recordingTap) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed++
}

// A tap sees each direction's payload as relayed, unmasked, and is closed
// once when the stream ends; a nil Tap leaves a stream alone.
func TestTap(t *testing.T) {
	tap := &recordingTap{}
	var asked []string
	h := newHub(t, Options{Tap: func(st Stream) Tap {
		tap.mu.Lock()
		asked = append(asked, st.DeviceID)
		tap.mu.Unlock()
		if st.DeviceID == "untapped" {
			return nil
		}
		return tap
	}})
	for _, dev := range []string{"tapped", "untapped"} {
		st := h.open(t, dev, 0)
		svc := h.mustDial(t, st, st.ServiceToken)
		d := h.mustDial(t, st, st.DeviceToken)
		if _, err := svc.Write([]byte("keys " + dev)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len("keys "+dev))
		if _, err := io.ReadFull(d, got); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Write([]byte("screen " + dev)); err != nil {
			t.Fatal(err)
		}
		got = make([]byte, len("screen "+dev))
		if _, err := io.ReadFull(svc, got); err != nil {
			t.Fatal(err)
		}
		svc.Close()
		h.info(t)
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if string(tap.toDevice) != "keys tapped" || string(tap.toSvc) != "screen tapped" || tap.closed != 1 {
		t.Errorf("tap saw %q to the device, %q to the service, closed %d times", tap.toDevice, tap.toSvc, tap.closed)
	}
	if len(asked) != 2 {
		t.Errorf("asked for %d taps, want 2", len(asked))
	}
}
