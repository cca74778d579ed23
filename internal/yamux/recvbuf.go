package yamux

import "io"

// recvBuffer holds what a stream received and was not read yet, in place
// of upstream's bytes.Buffer. A bytes.Buffer filled by io.Copy doubles
// and always wants bytes.MinRead of spare room, so a full window sat in a
// buffer of twice the window or more; this one reads each frame's bytes
// exactly and never holds more than the stream's maximum window.
type recvBuffer struct {
	buf []byte // the unread bytes are buf[off:]
	off int
}

// Len is the number of unread bytes.
func (b *recvBuffer) Len() int {
	return len(b.buf) - b.off
}

// Cap is the buffer's capacity: what the stream holds for its reader.
func (b *recvBuffer) Cap() int {
	return cap(b.buf)
}

// Read copies unread bytes into p. Once all are read the buffer is empty
// again, its capacity kept for the next frame.
func (b *recvBuffer) Read(p []byte) (int, error) {
	if b.Len() == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.buf[b.off:])
	b.off += n
	if b.off == len(b.buf) {
		b.buf, b.off = b.buf[:0], 0
	}
	return n, nil
}

// readFrame appends exactly n bytes from r. Room is made by moving the
// unread bytes to the front and, when that is not enough, by a larger
// buffer: double the old one, at least what is needed, at most limit (the
// stream's maximum window) unless more is needed, which the receive
// window rules out. On an error nothing is appended: the session is over.
func (b *recvBuffer) readFrame(r io.Reader, n, limit int) error {
	need := b.Len() + n
	switch {
	case cap(b.buf)-len(b.buf) >= n:
	case cap(b.buf) >= need:
		k := copy(b.buf[:cap(b.buf)], b.buf[b.off:])
		b.buf, b.off = b.buf[:k], 0
	default:
		size := 2 * cap(b.buf)
		if size > limit {
			size = limit
		}
		if size < need {
			size = need
		}
		grown := make([]byte, b.Len(), size)
		copy(grown, b.buf[b.off:])
		b.buf, b.off = grown, 0
	}
	end := len(b.buf)
	if _, err := io.ReadFull(r, b.buf[end:end+n]); err != nil {
		return err
	}
	b.buf = b.buf[:end+n]
	return nil
}
