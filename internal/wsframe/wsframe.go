// Package wsframe is Tether's one WebSocket frame codec (RFC 6455 §5):
// frame headers written and read, the checks every reader of them makes,
// and the close frame's body. The hub's stream relay, its MQTT broker and
// the SDKs' stream client all frame through it.
//
// It uses gobwas/ws's types (ws.Header, ws.OpCode, ws.StatusCode) and its
// masking (ws.Cipher), which cost nothing per frame, and writes and reads
// headers itself because the hot paths need what gobwas's writer and
// reader do not do: a header written in place in front of a payload
// already in the caller's buffer, so that header and payload leave in one
// Write; a header read across reads that a read deadline cut short; and a
// header decoded into the caller's ws.Header rather than returned, which
// spares a small frame the copies. Nothing is allocated per frame.
package wsframe

import (
	"bufio"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/gobwas/ws"
)

// MaxHeaderSize is the largest header: a 64-bit length and a mask.
const MaxHeaderSize = ws.MaxHeaderSize

// HeaderSize is the size of the header of a frame of n payload bytes,
// masked (a client's) or not (a server's).
func HeaderSize(n int, masked bool) int {
	size := 2
	switch {
	case n > 0xffff:
		size = 10
	case n >= 126:
		size = 4
	}
	if masked {
		size += 4
	}
	return size
}

// PutHeader writes an unmasked header, a server's, at the start of b and
// returns its size, HeaderSize(n, false).
func PutHeader(b []byte, op ws.OpCode, fin bool, n int) int {
	b[0] = byte(op)
	if fin {
		b[0] |= 0x80
	}
	switch {
	case n < 126:
		b[1] = byte(n)
		return 2
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		return 4
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		return 10
	}
}

// PutMaskedHeader writes a client's header with a fresh mask at the start
// of b and returns its size, HeaderSize(n, true), and the mask, which the
// caller applies to the payload with ws.Cipher.
func PutMaskedHeader(b []byte, op ws.OpCode, fin bool, n int) (int, [4]byte) {
	i := PutHeader(b, op, fin, n)
	b[1] |= 0x80
	// The mask only defeats cache poisoning by proxies (RFC 6455 §10.3);
	// it need not be a secret, so math/rand is enough.
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	copy(b[i:], mask[:])
	return i + 4, mask
}

// AppendFrame appends a whole unmasked frame with FIN, a server's, to b:
// header and payload for one Write. It grows b only when b lacks the room.
func AppendFrame(b []byte, op ws.OpCode, p []byte) []byte {
	b = slices.Grow(b, HeaderSize(len(p), false)+len(p))
	n := PutHeader(b[len(b):cap(b)], op, true, len(p))
	return append(b[:len(b)+n], p...)
}

// AppendMaskedFrame appends a whole masked frame with FIN, a client's, to
// b, masking a copy of p: p itself stays as it was.
func AppendMaskedFrame(b []byte, op ws.OpCode, p []byte) []byte {
	b = slices.Grow(b, HeaderSize(len(p), true)+len(p))
	n, mask := PutMaskedHeader(b[len(b):cap(b)], op, true, len(p))
	start := len(b) + n
	b = append(b[:start], p...)
	ws.Cipher(b[start:], mask, 0)
	return b
}

// HeaderLen is the size of a header given its first two bytes.
func HeaderLen(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// The readers decode into a header the caller owns rather than return
// one: ws.Header holds an array, so it would be returned through memory,
// and the copies cost a small frame's read a measurable part of its time.

// Decode decodes into h the header at the start of b, which holds at
// least HeaderLen(b[0], b[1]) bytes. Its only error is
// ws.ErrHeaderLengthMSB, for a 64-bit length with its top bit set, which
// no int64 holds; everything else Check judges.
func Decode(b []byte, h *ws.Header) error {
	*h = ws.Header{
		Fin:    b[0]&0x80 != 0,
		Rsv:    (b[0] & 0x70) >> 4,
		OpCode: ws.OpCode(b[0] & 0x0f),
		Masked: b[1]&0x80 != 0,
	}
	rest := b[2:]
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
	case 127:
		v := binary.BigEndian.Uint64(rest)
		if v>>63 != 0 {
			return ws.ErrHeaderLengthMSB
		}
		h.Length = int64(v)
		rest = rest[8:]
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], rest)
	}
	return nil
}

// ReadHeader reads one header from r into buf and decodes it into h,
// reading nothing past it. It reads the first two bytes, then the rest
// (which they size), each with io.ReadFull, and returns io.ReadFull's
// error as it came, as gobwas/ws's ReadHeader does: io.EOF when r ended
// before either part began. After an error h holds nothing of use.
func ReadHeader(r io.Reader, buf *[MaxHeaderSize]byte, h *ws.Header) error {
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return err
	}
	n := HeaderLen(buf[0], buf[1])
	if _, err := io.ReadFull(r, buf[2:n]); err != nil {
		return err
	}
	return Decode(buf[:n], h)
}

// HeaderReader reads one header across calls: a read that fails midway,
// when a read deadline passes, keeps the bytes it got, and the next call
// goes on from there. Its zero value is ready; it is ready for the next
// header again once Read returned one.
type HeaderReader struct {
	buf [MaxHeaderSize]byte
	n   int // bytes of buf read so far
}

// Read reads the rest of the header from r and decodes it into h. It
// reads nothing past the header. r's error is returned as it came, unless
// the header was complete anyway; after an error h holds nothing of use.
func (hr *HeaderReader) Read(r *bufio.Reader, h *ws.Header) error {
	need := 2
	if hr.n >= 2 {
		need = HeaderLen(hr.buf[0], hr.buf[1])
	}
	for hr.n < need {
		n, err := r.Read(hr.buf[hr.n:need])
		hr.n += n
		if hr.n >= 2 {
			need = HeaderLen(hr.buf[0], hr.buf[1])
		}
		if hr.n >= need {
			break
		}
		if err != nil {
			return err
		}
	}
	hr.n = 0
	return Decode(hr.buf[:need], h)
}

// ProtocolError is what Check or CheckClose finds that breaks RFC 6455.
// Its text is fit for the reason of the close frame that says so.
type ProtocolError string

func (e ProtocolError) Error() string { return string(e) }

// What Check and CheckClose find; a reserved opcode is a ProtocolError
// that names it.
const (
	ErrReservedBits ProtocolError = "reserved bits set"
	ErrUnmasked     ProtocolError = "unmasked client frame"
	ErrControl      ProtocolError = "fragmented or oversized control frame"
	ErrCloseBody    ProtocolError = "close frame with a one-byte body"
)

// Check reports what in h breaks RFC 6455 whatever the stream: reserved
// bits (Tether negotiates no extension, their only use), a reserved
// opcode, a control frame fragmented or longer than 125 bytes, and, for a
// frame fromClient, no mask (§5.1: a server closes on one). The checks
// that depend on the frames before (continuations, the end-of-stream
// marker) are the reader's.
func Check(h *ws.Header, fromClient bool) error {
	switch {
	case h.Rsv != 0:
		return ErrReservedBits
	case fromClient && !h.Masked:
		return ErrUnmasked
	case h.OpCode.IsReserved():
		return ProtocolError("reserved opcode " + strconv.Itoa(int(h.OpCode)))
	case h.OpCode.IsControl() && (!h.Fin || h.Length > ws.MaxControlFramePayloadSize):
		return ErrControl
	}
	return nil
}

// CheckClose reports a close frame's body that breaks RFC 6455 (§5.5.1):
// one byte, half a code.
func CheckClose(body []byte) error {
	if len(body) == 1 {
		return ErrCloseBody
	}
	return nil
}

// CloseEcho is the body of the close frame that answers one with body: its
// code alone, as RFC 6455 §5.5.1 asks, or nothing when it had none.
func CloseEcho(body []byte) []byte {
	return body[:min(len(body), 2)]
}

// IsMarker reports whether h has the shape of tether-stream.v1's
// end-of-stream marker: an empty binary frame with FIN. Whether it is the
// marker depends on the subprotocol the stream's ends chose.
func IsMarker(h *ws.Header) bool {
	return h.OpCode == ws.OpBinary && h.Fin && h.Length == 0
}
