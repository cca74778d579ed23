package wire

// A terminal stream is a stream whose device end is a shell on a
// pseudo-terminal (tether agent's @shell), and whose service end is a
// viewer: tether shell, or the web console's terminal in a browser. Both
// directions carry frames, each a type byte, its payload's length as a
// big-endian uint16 and the payload, because a stream is a byte stream
// (Azure's relay passes WebSocket messages through as they came, and a
// session splits and joins them): a frame may arrive cut in pieces or
// joined to the next one.
//
//  1. device → viewer, as soon as the device accepted: TermHello with
//     TermGreeting. A viewer reads the stream's first bytes before it sends
//     anything and goes no further unless they are this frame: a plain TCP
//     stream (sshd's banner, a web server's silence) is never taken for a
//     shell.
//  2. viewer → device: TermHello with TermGreeting, then TermResize with
//     its window's size. The device starts no shell before a viewer's
//     hello, and closes a stream whose first frame is anything else.
//  3. both ways: TermData, the terminal's bytes (keys one way, the
//     screen's output the other), as they come; TermResize from the
//     viewer whenever its window changes.
//  4. device → viewer, when the shell ended: TermExit with its status and,
//     when the device ended it (a time limit, the agent stopping), why.
//     Then the device closes the stream. A viewer that closes the stream
//     ends the shell.
//
// A frame of a type a side does not know is skipped, so that a later
// version may add some; TermGreeting's version changes only for a change
// an older side cannot skip. docs/protocol.md tells the same with the
// reasons.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Types of the frames of a terminal stream.
const (
	TermHello  byte = 1 // payload: TermGreeting
	TermData   byte = 2 // payload: terminal bytes
	TermResize byte = 3 // payload: rows and columns, two big-endian uint16
	TermExit   byte = 4 // payload: the status as a big-endian int32, then why, in UTF-8
)

// TermGreeting is the payload of both sides' TermHello: the protocol and
// its version.
const TermGreeting = "tether-term/1"

// TermHeaderLen is the length of a frame's header: its type and its
// payload's length.
const TermHeaderLen = 3

// TermMaxPayload is the longest payload a frame holds.
const TermMaxPayload = 1<<16 - 1

// ErrNotTerminal is the error of a stream whose first bytes are not a
// terminal stream's hello: the viewer reached a plain TCP stream.
var ErrNotTerminal = errors.New("not a terminal stream (its first bytes are no " + TermGreeting + " hello)")

// AppendTermFrame appends a frame of type typ with payload p to b.
// A payload longer than TermMaxPayload panics: the caller splits data.
func AppendTermFrame(b []byte, typ byte, p []byte) []byte {
	if len(p) > TermMaxPayload {
		panic("wire: terminal frame payload too long")
	}
	b = append(b, typ, byte(len(p)>>8), byte(len(p)))
	return append(b, p...)
}

// TermHelloFrame is the hello frame each side sends first.
func TermHelloFrame() []byte {
	return AppendTermFrame(nil, TermHello, []byte(TermGreeting))
}

// TermResizeFrame is the frame of a window of rows by cols cells.
func TermResizeFrame(rows, cols uint16) []byte {
	return AppendTermFrame(nil, TermResize, []byte{byte(rows >> 8), byte(rows), byte(cols >> 8), byte(cols)})
}

// TermExitFrame is the frame of a shell that ended with status, and why
// when the device ended it (cut to fit a frame).
func TermExitFrame(status int32, why string) []byte {
	p := binary.BigEndian.AppendUint32(nil, uint32(status))
	if len(why) > TermMaxPayload-4 {
		why = why[:TermMaxPayload-4]
	}
	return AppendTermFrame(nil, TermExit, append(p, why...))
}

// ParseTermResize reads a TermResize payload.
func ParseTermResize(p []byte) (rows, cols uint16, err error) {
	if len(p) < 4 {
		return 0, 0, fmt.Errorf("terminal resize of %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:]), nil
}

// ParseTermExit reads a TermExit payload.
func ParseTermExit(p []byte) (status int32, why string, err error) {
	if len(p) < 4 {
		return 0, "", fmt.Errorf("terminal exit of %d bytes, want at least 4", len(p))
	}
	return int32(binary.BigEndian.Uint32(p)), string(p[4:]), nil
}

// CheckTermHello checks a TermHello payload: version 1 of the protocol.
// What follows the version after a space is for later versions.
func CheckTermHello(p []byte) error {
	s := string(p)
	rest, ok := strings.CutPrefix(s, "tether-term/")
	if !ok {
		return ErrNotTerminal
	}
	v, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return ErrNotTerminal
	case n != 1:
		return fmt.Errorf("terminal protocol version %d: this end speaks %s", n, TermGreeting)
	}
	return nil
}

// TermReader reads the frames of a terminal stream.
type TermReader struct {
	r   *bufio.Reader
	buf []byte
}

// NewTermReader reads frames from r.
func NewTermReader(r io.Reader) *TermReader {
	return &TermReader{r: bufio.NewReaderSize(r, 16<<10)}
}

// Next returns the next frame; its payload is valid until the next call.
// A stream that ends between frames gives io.EOF, one that ends inside a
// frame io.ErrUnexpectedEOF.
func (t *TermReader) Next() (typ byte, payload []byte, err error) {
	var h [TermHeaderLen]byte
	if _, err := io.ReadFull(t.r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint16(h[1:]))
	if cap(t.buf) < n {
		t.buf = make([]byte, n)
	}
	t.buf = t.buf[:n]
	if _, err := io.ReadFull(t.r, t.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return h[0], t.buf, nil
}

// ReadHello reads the first frame and checks that it is a terminal
// stream's hello: ErrNotTerminal when it is not.
func (t *TermReader) ReadHello() error {
	// A plain stream's first bytes need not be a whole frame: look at the
	// header before waiting for a payload that may never come.
	h, err := t.r.Peek(TermHeaderLen)
	if err != nil {
		if errors.Is(err, io.EOF) && len(h) > 0 {
			return ErrNotTerminal
		}
		return err
	}
	if h[0] != TermHello || int(binary.BigEndian.Uint16(h[1:])) > 64 {
		return ErrNotTerminal
	}
	typ, p, err := t.Next()
	if err != nil {
		return err
	}
	if typ != TermHello {
		return ErrNotTerminal
	}
	return CheckTermHello(p)
}
