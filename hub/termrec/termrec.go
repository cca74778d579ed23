// Package termrec records the terminal sessions that cross the hub
// (tetherd --record-terminals) as asciicast v2 files, one per stream, in a
// folder of the hub's data: {streamId}.cast, mode 0600. It sees a
// stream's bytes through the relay's Tap and reads the terminal framing
// of package wire only where the device's first bytes are a terminal
// stream's hello; any other stream it lets go at its first frame header.
//
// What it writes is what the viewer saw: the device's output ("o") and the
// window's size ("r"). Keys typed are not recorded: they hold what the
// screen never shows, passwords typed at a prompt among them.
package termrec

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tether-io/tether/wire"
)

// Recorder writes recordings into its folder.
type Recorder struct {
	dir string
	log *slog.Logger
}

// New returns a Recorder that writes into dir, made (mode 0700) if it is
// not there.
func New(dir string, log *slog.Logger) (*Recorder, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("terminal recordings: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{dir: dir, log: log}, nil
}

// ErrNotFound is Open's error for a stream with no recording.
var ErrNotFound = errors.New("no recording of that stream")

// validID says whether id can name a recording: the relay's stream IDs
// are base32 letters and digits, and nothing else may reach a path.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// Path is where the recording of stream id is, or would be.
func (r *Recorder) Path(id string) string { return filepath.Join(r.dir, id+".cast") }

// Open opens the recording of stream id.
func (r *Recorder) Open(id string) (*os.File, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	f, err := os.Open(r.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return f, err
}

// Tap returns the recorder's tap of stream id, of device's stream name;
// it decides at the stream's first bytes whether there is anything to
// record.
func (r *Recorder) Tap(id, device, name string) *Session {
	return &Session{r: r, id: id, device: device, name: name}
}

// Session is the recording of one stream: a relay.Tap.
type Session struct {
	r                *Recorder
	id, device, name string

	mu      sync.Mutex
	state   int // undecided, recording or off
	fromDev frames
	toDev   frames
	f       *os.File
	w       *bufio.Writer
	start   time.Time
	header  bool
	rows    uint16
	cols    uint16
	tail    []byte // the start of a UTF-8 sequence the next output ends
}

const (
	undecided = iota
	recording
	off
)

// Data takes the bytes relayed one way.
func (s *Session) Data(toDevice bool, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == off {
		return
	}
	if toDevice {
		if s.state == undecided {
			// A terminal viewer says nothing before the device's hello:
			// a service that speaks first is a plain stream's.
			s.stop()
			return
		}
		s.toDev.push(p)
		s.viewerFrames()
		return
	}
	s.fromDev.push(p)
	if s.state == undecided {
		s.decide()
		if s.state != recording {
			return
		}
	}
	s.deviceFrames()
}

// decide looks at the device's first bytes: a terminal stream's hello
// starts the recording, anything else ends the tap's interest.
func (s *Session) decide() {
	b := s.fromDev.buf
	if len(b) == 0 {
		return
	}
	if b[0] != wire.TermHello || len(b) >= 3 && binary.BigEndian.Uint16(b[1:]) > 64 {
		s.stop()
		return
	}
	typ, p, ok := s.fromDev.next()
	if !ok {
		return // the rest of the hello is on its way
	}
	if typ != wire.TermHello || wire.CheckTermHello(p) != nil {
		s.stop()
		return
	}
	f, err := os.OpenFile(s.r.Path(s.id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		s.r.log.Warn("cannot record a terminal session", "stream", s.id, "device", s.device, "err", err)
		s.stop()
		return
	}
	s.f, s.w = f, bufio.NewWriter(f)
	s.start = time.Now()
	s.state = recording
	s.r.log.Info("recording a terminal session", "stream", s.id, "device", s.device, "name", s.name, "file", s.r.Path(s.id))
}

// stop ends the tap's interest: buffers go, nothing more is parsed.
func (s *Session) stop() {
	s.state = off
	s.fromDev, s.toDev = frames{}, frames{}
}

// viewerFrames records the viewer's resizes; its keys are not recorded.
func (s *Session) viewerFrames() {
	for {
		typ, p, ok := s.toDev.next()
		if !ok {
			return
		}
		if typ != wire.TermResize {
			continue
		}
		rows, cols, err := wire.ParseTermResize(p)
		if err != nil || rows == 0 || cols == 0 {
			continue
		}
		if !s.header {
			s.rows, s.cols = rows, cols
			s.writeHeader()
			continue
		}
		if rows != s.rows || cols != s.cols {
			s.rows, s.cols = rows, cols
			s.event("r", strconv.Itoa(int(cols))+"x"+strconv.Itoa(int(rows)))
		}
	}
}

// deviceFrames records the device's output.
func (s *Session) deviceFrames() {
	for s.state == recording {
		typ, p, ok := s.fromDev.next()
		if !ok {
			return
		}
		if typ != wire.TermData {
			continue
		}
		if !s.header {
			s.writeHeader()
		}
		s.event("o", s.text(p))
	}
}

// text is p as UTF-8 text, with a sequence that p cuts kept for the next
// output: a frame may end inside a character.
func (s *Session) text(p []byte) string {
	b := append(s.tail, p...)
	cut := len(b)
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				cut = i
			}
			break
		}
	}
	s.tail = append([]byte(nil), b[cut:]...)
	return string(b[:cut])
}

// header is asciicast v2's first line.
type header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp"`
	Title     string            `json:"title"`
	Env       map[string]string `json:"env"`
}

func (s *Session) writeHeader() {
	s.header = true
	if s.rows == 0 || s.cols == 0 {
		s.rows, s.cols = 24, 80
	}
	b, _ := json.Marshal(header{
		Version: 2, Width: int(s.cols), Height: int(s.rows), Timestamp: s.start.Unix(),
		Title: s.device + " " + s.name + " (stream " + s.id + ")",
		Env:   map[string]string{"TERM": "xterm-256color"},
	})
	s.line(b)
}

// event writes one event line: [seconds since the start, code, data].
func (s *Session) event(code, data string) {
	d, _ := json.Marshal(data)
	t := strconv.FormatFloat(time.Since(s.start).Seconds(), 'f', 6, 64)
	s.line([]byte("[" + t + `, "` + code + `", ` + string(d) + "]"))
}

// line writes a line and flushes it: a hub that stops at once loses no
// more than the line being written.
func (s *Session) line(b []byte) {
	s.w.Write(b)
	s.w.WriteByte('\n')
	if err := s.w.Flush(); err != nil {
		s.r.log.Warn("terminal recording failed", "stream", s.id, "err", err)
		s.f.Close()
		s.stop()
	}
}

// Close ends the recording.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == recording {
		if len(s.tail) > 0 {
			s.event("o", string(s.tail))
		}
		if !s.header {
			s.writeHeader()
		}
		if s.state == recording {
			s.f.Close()
		}
	}
	s.state = off
}

// Recorded says whether the stream was a terminal session and its
// recording was started: its file is there for Open, as far as it got.
func (s *Session) Recorded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f != nil // opened once, as the recording starts
}

// frames cuts one direction's bytes into frames of the terminal framing.
type frames struct {
	buf []byte
	off int
}

func (f *frames) push(p []byte) {
	if f.off > 0 && f.off == len(f.buf) {
		f.buf, f.off = f.buf[:0], 0
	}
	f.buf = append(f.buf, p...)
}

// next returns the next whole frame, ok false until one is there.
func (f *frames) next() (typ byte, payload []byte, ok bool) {
	b := f.buf[f.off:]
	if len(b) < wire.TermHeaderLen {
		f.compact()
		return 0, nil, false
	}
	n := int(binary.BigEndian.Uint16(b[1:]))
	if len(b) < wire.TermHeaderLen+n {
		f.compact()
		return 0, nil, false
	}
	f.off += wire.TermHeaderLen + n
	return b[0], b[wire.TermHeaderLen : wire.TermHeaderLen+n], true
}

// compact moves what is left of the buffer to its start.
func (f *frames) compact() {
	if f.off > 0 {
		f.buf = append(f.buf[:0], f.buf[f.off:]...)
		f.off = 0
	}
}
