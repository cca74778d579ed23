package hub_test

import (
	"net/http"
	"testing"

	"github.com/tether-io/tether/wire"
)

// TestMuxDeviceDisabledElsewhereWithDataSession: a device disabled or
// deleted through another node of the cluster (here, in the registry
// itself, which this node learns of only from its watch) is refused a
// stream asked after the change was made, though its data session is
// still open here: the change is in the registry before the other node
// answers, and a stream request must not outrun the watch to the device.
func TestMuxDeviceDisabledElsewhereWithDataSession(t *testing.T) {
	h := startMuxHub(t, nil)
	svc := h.serviceSession(t)
	for i, deleted := range []bool{false, true, false, true, false, true} {
		id := "dev" + string(rune('a'+i))
		h.sessionDevice(t, id, accept)
		if deleted {
			if err := h.reg.Delete(t.Context(), id, "*"); err != nil {
				t.Fatal(err)
			}
		} else {
			d, err := h.reg.Get(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			d.Status = wire.StatusDisabled
			if _, _, err := h.reg.Put(t.Context(), d, "*"); err != nil {
				t.Fatal(err)
			}
		}
		ans, c := openStream(t, svc, wire.MuxOpen{DeviceID: id, Name: "echo"})
		if c != nil {
			c.Close()
		}
		if c != nil || ans.Status != http.StatusNotFound {
			t.Errorf("stream to %s (deleted %v) asked after the change: %+v", id, deleted, ans)
		}
	}
}
