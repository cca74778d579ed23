package relay

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/gobwas/ws"
)

// TestMaskKeys: a client's frame masked with the key 0, as any client
// (not only a session's stream) may send, arrives as written, and so does
// one masked with any other key, which the relay unmasks, across the
// buffer's boundary too: the skip of key 0 changes no byte of either.
func TestMaskKeys(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	svc, _ := rawDial(t, h, st, st.ServiceToken)
	_, devR := rawDial(t, h, st, st.DeviceToken)

	big := make([]byte, 2*bufSize+77)
	rand.Read(big)
	for _, key := range [][4]byte{{}, {0x12, 0x34, 0x56, 0x78}, {0, 0, 0, 1}} {
		for _, p := range [][]byte{[]byte("small frame"), big} {
			f := ws.NewBinaryFrame(bytes.Clone(p))
			f = ws.MaskFrameWith(f, key)
			if err := ws.WriteFrame(svc, f); err != nil {
				t.Fatal(err)
			}
			var got []byte
			for {
				fr := rawRead(t, devR)
				got = append(got, fr.payload...)
				if fr.fin {
					break
				}
			}
			if !bytes.Equal(got, p) {
				t.Errorf("key %x, %d bytes: the device read other bytes", key, len(p))
			}
		}
	}
}
