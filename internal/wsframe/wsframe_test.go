package wsframe

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"testing"

	"github.com/gobwas/ws"
)

// sizes cover each length encoding at its edges.
var sizes = []int{0, 1, 125, 126, 0xffff, 0x10000, 256 << 10, math.MaxInt32 + 1}

// gobwasHeader is h as gobwas/ws writes it: the reference encoding.
func gobwasHeader(t testing.TB, h ws.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := ws.WriteHeader(&b, h); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestPutHeader: headers are written as gobwas/ws writes them, sized as
// HeaderSize and HeaderLen say, and decode to what was put.
func TestPutHeader(t *testing.T) {
	for _, n := range sizes {
		for _, op := range []ws.OpCode{ws.OpContinuation, ws.OpBinary, ws.OpClose} {
			for _, fin := range []bool{true, false} {
				for _, masked := range []bool{false, true} {
					var b [MaxHeaderSize]byte
					want := ws.Header{Fin: fin, OpCode: op, Masked: masked, Length: int64(n)}
					var size int
					if masked {
						size, want.Mask = PutMaskedHeader(b[:], op, fin, n)
					} else {
						size = PutHeader(b[:], op, fin, n)
					}
					if got := b[:size]; !bytes.Equal(got, gobwasHeader(t, want)) {
						t.Errorf("%+v written % x, want % x", want, got, gobwasHeader(t, want))
					}
					if hs, hl := HeaderSize(n, masked), HeaderLen(b[0], b[1]); hs != size || hl != size {
						t.Errorf("%+v: %d bytes written, HeaderSize says %d, HeaderLen %d", want, size, hs, hl)
					}
					h := ws.Header{Mask: [4]byte{9, 9, 9, 9}, Rsv: 7} // all overwritten
					if err := Decode(b[:size], &h); err != nil || h != want {
						t.Errorf("Decode(% x) = %+v, %v, want %+v", b[:size], h, err, want)
					}
				}
			}
		}
	}
}

// TestMasksDiffer: each masked header gets a mask of its own.
func TestMasksDiffer(t *testing.T) {
	var b [MaxHeaderSize]byte
	seen := make(map[[4]byte]bool)
	for range 64 {
		_, m := PutMaskedHeader(b[:], ws.OpBinary, true, 1)
		seen[m] = true
	}
	if len(seen) < 60 {
		t.Fatalf("64 masks, %d different", len(seen))
	}
}

// TestAppendFrame: whole frames read back as sent, a masked one unmasks to
// the caller's bytes, which stay as they were, and a buffer with room
// enough is not reallocated.
func TestAppendFrame(t *testing.T) {
	for _, n := range sizes[:7] {
		p := bytes.Repeat([]byte{0xa5, 0x5a, 7}, n/3+1)[:n]
		orig := bytes.Clone(p)
		for _, masked := range []bool{false, true} {
			prefix := []byte("x")
			var b []byte
			if masked {
				b = AppendMaskedFrame(prefix, ws.OpBinary, p)
			} else {
				b = AppendFrame(prefix, ws.OpBinary, p)
			}
			if b[0] != 'x' {
				t.Fatalf("n=%d: the prefix was overwritten", n)
			}
			r := bytes.NewReader(b[1:])
			h, err := ws.ReadHeader(r)
			if err != nil {
				t.Fatalf("n=%d masked=%v: %v", n, masked, err)
			}
			if len(b) != 1+HeaderSize(n, masked)+n || h.Length != int64(r.Len()) {
				t.Errorf("n=%d masked=%v: frame of %d bytes, header %+v", n, masked, len(b)-1, h)
			}
			if h.Masked != masked || !h.Fin || h.OpCode != ws.OpBinary {
				t.Errorf("n=%d: header %+v", n, h)
			}
			payload := b[len(b)-r.Len():]
			if masked {
				ws.Cipher(payload, h.Mask, 0)
			}
			if !bytes.Equal(payload, p) {
				t.Errorf("n=%d masked=%v: payload differs", n, masked)
			}
			if !bytes.Equal(p, orig) {
				t.Fatalf("n=%d masked=%v: the caller's bytes changed", n, masked)
			}
		}
	}

	buf := make([]byte, 0, MaxHeaderSize+ws.MaxControlFramePayloadSize)
	body := make([]byte, ws.MaxControlFramePayloadSize)
	if a := testing.AllocsPerRun(10, func() { AppendFrame(buf, ws.OpClose, body) }); a != 0 {
		t.Errorf("AppendFrame: %v allocations with room enough", a)
	}
	if a := testing.AllocsPerRun(10, func() { AppendMaskedFrame(buf, ws.OpClose, body) }); a != 0 {
		t.Errorf("AppendMaskedFrame: %v allocations with room enough", a)
	}
}

// TestReadHeader: a header and no byte more is read; the reader's end is
// reported as io.ReadFull reports it, and a 64-bit length with its top
// bit set is an error.
func TestReadHeader(t *testing.T) {
	hdr := gobwasHeader(t, ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: 300})
	r := bytes.NewReader(append(bytes.Clone(hdr), "rest"...))
	var buf [MaxHeaderSize]byte
	var h ws.Header
	err := ReadHeader(r, &buf, &h)
	if err != nil || h.Length != 300 || h.Mask != [4]byte{1, 2, 3, 4} || !h.Masked {
		t.Fatalf("ReadHeader = %+v, %v", h, err)
	}
	if r.Len() != len("rest") {
		t.Fatalf("%d bytes left after the header, want 4", r.Len())
	}

	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"nothing":          {nil, io.EOF},
		"one byte":         {hdr[:1], io.ErrUnexpectedEOF},
		"two of eight":     {hdr[:2], io.EOF},
		"five of eight":    {hdr[:5], io.ErrUnexpectedEOF},
		"length top bit":   {[]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, ws.ErrHeaderLengthMSB},
		"masked, top bit":  {[]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, ws.ErrHeaderLengthMSB},
		"16-bit, half cut": {[]byte{0x82, 126, 1}, io.ErrUnexpectedEOF},
	} {
		err := ReadHeader(bytes.NewReader(tc.in), &buf, new(ws.Header))
		if err != tc.want {
			t.Errorf("%s: ReadHeader error %v, want %v", name, err, tc.want)
		}
		// gobwas/ws's reader, which the hub used before, says the same.
		if _, gerr := ws.ReadHeader(bytes.NewReader(tc.in)); gerr != tc.want {
			t.Errorf("%s: gobwas says %v, want %v", name, gerr, tc.want)
		}
	}
}

// cutReader hands out b in pieces, each Read after a failed one: a
// piece is as long as the next byte of cuts says (one byte once cuts is
// used up), and the Reads in between fail with errTimeout, as a read
// deadline passing mid-header would.
type cutReader struct {
	b, cuts  []byte
	failNext bool
}

var errTimeout = errors.New("timeout")

func (r *cutReader) Read(p []byte) (int, error) {
	if r.failNext = !r.failNext; !r.failNext {
		return 0, errTimeout
	}
	piece := 1
	if len(r.cuts) > 0 {
		piece, r.cuts = max(int(r.cuts[0]), 1), r.cuts[1:]
	}
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b[:min(piece, len(r.b))])
	r.b = r.b[n:]
	return n, nil
}

// readCut reads a header from b handed out in pieces as cuts says, the
// reads failing in between, until it is whole or the bytes end. It
// returns how many bytes of b the header took.
func readCut(b, cuts []byte) (ws.Header, int, error) {
	cr := &cutReader{b: b, cuts: cuts}
	br := bufio.NewReaderSize(cr, 16)
	var hr HeaderReader
	for {
		var h ws.Header
		err := hr.Read(br, &h)
		if err != errTimeout {
			return h, len(b) - len(cr.b) - br.Buffered(), err
		}
	}
}

// TestHeaderReaderResumes: reads cut short anywhere in a header lose
// nothing, and the reader is ready for the next header after one.
func TestHeaderReaderResumes(t *testing.T) {
	var stream []byte
	var want []ws.Header
	for i, n := range sizes {
		h := ws.Header{Fin: i%2 == 0, OpCode: ws.OpBinary, Masked: i%3 != 0, Length: int64(n)}
		if h.Masked {
			h.Mask = [4]byte{byte(i), 2, 3, 4}
		}
		want = append(want, h)
		stream = append(stream, gobwasHeader(t, h)...)
	}
	br := bufio.NewReaderSize(&cutReader{b: stream}, 16)
	var hr HeaderReader
	for i := 0; i < len(want); {
		var h ws.Header
		err := hr.Read(br, &h)
		if err == errTimeout {
			continue
		}
		if err != nil || h != want[i] {
			t.Fatalf("header %d: %+v, %v, want %+v", i, h, err, want[i])
		}
		i++
	}
	if err := hr.Read(br, new(ws.Header)); err != errTimeout {
		t.Fatalf("after the last header: %v", err)
	}
	if err := hr.Read(br, new(ws.Header)); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

// TestCheck: what each reader refuses, in the order it is reported.
func TestCheck(t *testing.T) {
	ok := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Length: 1 << 20}
	with := func(f func(*ws.Header)) ws.Header { h := ok; f(&h); return h }
	for name, tc := range map[string]struct {
		h          ws.Header
		fromClient bool
		want       string
	}{
		"data":                     {ok, true, ""},
		"fragment":                 {with(func(h *ws.Header) { h.Fin = false; h.OpCode = ws.OpContinuation }), true, ""},
		"ping of 125":              {with(func(h *ws.Header) { h.OpCode = ws.OpPing; h.Length = 125 }), true, ""},
		"unmasked from a server":   {with(func(h *ws.Header) { h.Masked = false }), false, ""},
		"unmasked from a client":   {with(func(h *ws.Header) { h.Masked = false }), true, "unmasked client frame"},
		"reserved bits":            {with(func(h *ws.Header) { h.Rsv = 4; h.Masked = false }), true, "reserved bits set"},
		"reserved data opcode":     {with(func(h *ws.Header) { h.OpCode = 3 }), false, "reserved opcode 3"},
		"reserved control opcode":  {with(func(h *ws.Header) { h.OpCode = 0xf; h.Fin = false }), true, "reserved opcode 15"},
		"ping of 126":              {with(func(h *ws.Header) { h.OpCode = ws.OpPing; h.Length = 126 }), true, "fragmented or oversized control frame"},
		"close without FIN":        {with(func(h *ws.Header) { h.OpCode = ws.OpClose; h.Fin = false; h.Length = 2 }), false, "fragmented or oversized control frame"},
		"unmasked, reserved bits":  {with(func(h *ws.Header) { h.Masked = false; h.Rsv = 1 }), true, "reserved bits set"},
		"unmasked, reserved op":    {with(func(h *ws.Header) { h.Masked = false; h.OpCode = 0xb }), true, "unmasked client frame"},
		"reserved op, no FIN, big": {with(func(h *ws.Header) { h.OpCode = 0xc; h.Fin = false }), true, "reserved opcode 12"},
	} {
		err := Check(&tc.h, tc.fromClient)
		got := ""
		if err != nil {
			got = err.Error()
			if _, ok := err.(ProtocolError); !ok {
				t.Errorf("%s: error of type %T", name, err)
			}
		}
		if got != tc.want {
			t.Errorf("%s: Check = %q, want %q", name, got, tc.want)
		}
	}
}

// TestCloseBody: a one-byte body is refused, and the answer to a close
// frame carries its code alone.
func TestCloseBody(t *testing.T) {
	for _, tc := range []struct {
		body, echo string
		bad        bool
	}{
		{"", "", false},
		{"\x03", "", true},
		{"\x03\xe8", "\x03\xe8", false},
		{"\x03\xe9going away", "\x03\xe9", false},
	} {
		if err := CheckClose([]byte(tc.body)); (err != nil) != tc.bad {
			t.Errorf("CheckClose(%q) = %v", tc.body, err)
		}
		if tc.bad {
			continue
		}
		if got := CloseEcho([]byte(tc.body)); string(got) != tc.echo {
			t.Errorf("CloseEcho(%q) = %q, want %q", tc.body, got, tc.echo)
		}
	}
}

// TestIsMarker: only an empty binary frame with FIN has the marker's shape.
func TestIsMarker(t *testing.T) {
	marker := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true}
	if !IsMarker(&marker) {
		t.Error("the marker is not one")
	}
	for _, h := range []ws.Header{
		{Fin: false, OpCode: ws.OpBinary},
		{Fin: true, OpCode: ws.OpText},
		{Fin: true, OpCode: ws.OpContinuation},
		{Fin: true, OpCode: ws.OpBinary, Length: 1},
	} {
		if IsMarker(&h) {
			t.Errorf("%+v taken for the marker", h)
		}
	}
}
