package relay

import (
	"testing"

	"github.com/gobwas/ws"
)

// TestProtocolErrors: bytes that break RFC 6455 from one side end the
// stream, close 1002 to that side and 1001 to the other; nothing of them
// reaches the other side.
func TestProtocolErrors(t *testing.T) {
	for name, raw := range map[string][]byte{
		"reserved bits":          {0x82 | 0x40, 0x80, 1, 2, 3, 4},
		"reserved opcode":        {0x8f, 0x80, 1, 2, 3, 4},
		"unmasked":               {0x82, 0x01, 'x'},
		"fragmented control":     {0x09, 0x80, 1, 2, 3, 4},
		"oversized control":      {0x89, 0xfe, 0x00, 0x80, 1, 2, 3, 4},
		"one-byte close payload": {0x88, 0x81, 1, 2, 3, 4, 'x' ^ 1},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHub(t, Options{})
			st := h.open(t, "dev1", 0)
			svc, svcR := rawDial(t, h, st, st.ServiceToken)
			_, devR := rawDial(t, h, st, st.DeviceToken)
			if _, err := svc.Write(raw); err != nil {
				t.Fatal(err)
			}
			wantClose(t, svcR, ws.StatusProtocolError)
			if f := rawRead(t, devR); f.op != ws.OpClose {
				t.Fatalf("the other side got %+v before the close", f)
			} else if code, _ := ws.ParseCloseFrameData([]byte(f.payload)); code != ws.StatusGoingAway {
				t.Fatalf("the other side got close %d, want 1001", code)
			}
			if info := h.info(t); info.ClosedBy != ClosedByService {
				t.Fatalf("ClosedBy %q", info.ClosedBy)
			}
		})
	}
}
