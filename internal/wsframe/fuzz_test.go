package wsframe

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

// FuzzReadHeader feeds the header readers a peer's bytes, which the hub
// reads before it knows anything of the peer. Both readers, whole and in
// pieces cut anywhere with failed reads between them, must agree with
// gobwas/ws's reader and read exactly the header, and a header that
// decodes must be written back the same.
func FuzzReadHeader(f *testing.F) {
	for _, b := range [][]byte{
		{},
		{0x82},
		{0x82, 0x00},
		{0x82, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'},
		{0x02, 0xfe, 0x01, 0x2c, 9, 9, 9, 9},
		{0x80, 0x7e, 0x00, 0x05},
		{0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0},
		{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
		{0xc2, 0x80, 1, 2, 3, 4},
		{0x8f, 0x80, 1, 2, 3, 4},
		{0x09, 0x80, 1, 2, 3, 4},
		{0x89, 0xfe, 0x00, 0x80, 1, 2, 3, 4},
		{0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2},
		{0x82, 0x7e},
	} {
		f.Add(b, []byte{1})
		f.Add(b, []byte{1, 3, 5})
	}
	f.Fuzz(func(t *testing.T, b, cuts []byte) {
		r := bytes.NewReader(b)
		var buf [MaxHeaderSize]byte
		var h ws.Header
		err := ReadHeader(r, &buf, &h)
		read := len(b) - r.Len()

		gh, gerr := ws.ReadHeader(bytes.NewReader(b))
		if err != gerr || (err == nil && h != gh) {
			t.Fatalf("ReadHeader = %+v, %v; gobwas/ws reads %+v, %v", h, err, gh, gerr)
		}
		sh, sread, serr := readCut(b, cuts)
		// Its errors are the reader's own: io.EOF for a header cut short.
		if (serr == nil) != (err == nil) || (serr == ws.ErrHeaderLengthMSB) != (err == ws.ErrHeaderLengthMSB) ||
			(err == nil && (sh != h || sread != read)) {
			t.Fatalf("cut %v: %+v, %d bytes, %v; whole: %+v, %d bytes, %v", cuts, sh, sread, serr, h, read, err)
		}
		if len(b) >= 2 {
			if want := min(HeaderLen(b[0], b[1]), len(b)); read != want {
				t.Fatalf("read %d bytes of a %d-byte header", read, HeaderLen(b[0], b[1]))
			}
		}
		if err != nil {
			return
		}
		_ = Check(&h, true)
		_ = Check(&h, false)

		// Written back: the same bytes, when the length took its shortest
		// form, as every writer's does.
		if read != HeaderSize(int(h.Length), h.Masked) {
			return
		}
		var out [MaxHeaderSize]byte
		n := PutHeader(out[:], h.OpCode, h.Fin, int(h.Length))
		if h.Masked {
			out[1] |= 0x80
			n += copy(out[n:], h.Mask[:])
		}
		want := bytes.Clone(b[:read])
		want[0] &^= 0x70 // PutHeader sets no reserved bit
		if !bytes.Equal(out[:n], want) {
			t.Fatalf("% x decodes to %+v, which is written % x", b[:read], h, out[:n])
		}
	})
}

// FuzzPutHeader: any header the writers put decodes to what was put, and
// is what gobwas/ws writes.
func FuzzPutHeader(f *testing.F) {
	f.Add(uint8(ws.OpBinary), true, false, uint64(0))
	f.Add(uint8(ws.OpContinuation), false, true, uint64(126))
	f.Add(uint8(ws.OpClose), true, true, uint64(0x10000))
	f.Add(uint8(ws.OpBinary), true, false, uint64(1)<<62)
	f.Fuzz(func(t *testing.T, op uint8, fin, masked bool, n uint64) {
		length := int(n &^ (1 << 63))
		code := ws.OpCode(op & 0x0f)
		var b [MaxHeaderSize]byte
		want := ws.Header{OpCode: code, Fin: fin, Masked: masked, Length: int64(length)}
		size := 0
		if masked {
			size, want.Mask = PutMaskedHeader(b[:], code, fin, length)
		} else {
			size = PutHeader(b[:], code, fin, length)
		}
		if size != HeaderSize(length, masked) || size != HeaderLen(b[0], b[1]) {
			t.Fatalf("%+v: %d bytes written, HeaderSize %d, HeaderLen %d", want, size, HeaderSize(length, masked), HeaderLen(b[0], b[1]))
		}
		var h ws.Header
		if err := Decode(b[:size], &h); err != nil || h != want {
			t.Fatalf("put %+v, decoded %+v, %v", want, h, err)
		}
		if g := gobwasHeader(t, want); !bytes.Equal(g, b[:size]) {
			t.Fatalf("%+v written % x, gobwas/ws writes % x", want, b[:size], g)
		}
	})
}
