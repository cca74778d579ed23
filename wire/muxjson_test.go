package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"
)

// muxHeaders are headers of every type, with strings encoding/json writes
// as they are and ones it escapes.
var muxHeaders = []any{
	MuxOpen{DeviceID: "dev-1", Name: "ssh"},
	MuxOpen{DeviceID: "dev-1", ModuleID: "m 1", Name: "ssh", ConnectTimeoutMs: 1500, ResponseTimeoutMs: -3, UserAgent: "Go-http-client/1.1"},
	&MuxOpen{DeviceID: "d<&>", Name: "a\"b\\c"},
	MuxOpen{DeviceID: "é\u2028", Name: "\x01\n"},
	MuxOpen{},
	MuxRequest{Name: "ssh", RID: "7", StreamID: "ABC"},
	&MuxRequest{},
	MuxAnswer{Status: 200, Accepted: true, StreamID: "X"},
	MuxAnswer{Status: 200, DeviceStatus: 403},
	&MuxAnswer{Status: 404, ErrorCode: "DeviceNotOnline", Message: "Device d is not online"},
	MuxAnswer{Status: -9223372036854775808},
	MuxAnswer{},
}

// A header is written byte for byte as encoding/json writes it.
func TestMuxHeaderAsEncodingJSON(t *testing.T) {
	for _, h := range muxHeaders {
		got, err := AppendMuxHeader([]byte("x"), h)
		if err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(h)
		want := binary.BigEndian.AppendUint16([]byte("x"), uint16(len(j)))
		want = append(want, j...)
		if !bytes.Equal(got, want) {
			t.Errorf("%#v: wrote %q, encoding/json %q", h, got, want)
		}
	}
}

// A header is read as encoding/json reads it, whatever it holds: the
// fields, in any case, nulls, numbers it refuses, unknown keys, escapes.
func TestMuxHeaderReadAsEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{"deviceId":"d","name":"n","connectTimeoutMs":12}`,
		` { "status" : 200 , "accepted" : true } `,
		`{"Status":200}`,
		`{"status":null}`,
		`{"status":1.5}`,
		`{"status":1e3}`,
		`{"status":01}`,
		`{"status":99999999999999999999}`,
		`{"status":"200"}`,
		`{"name":"a\u00e9"}`,
		`{"name":"tab	in"}`,
		`{"name":"x","extra":{"a":1}}`,
		`{"name":"x",}`,
		`{"name":"x"}x`,
		`{}`,
		`[]`,
		`{"accepted":truex}`,
		`{"accepted":false,"accepted":true}`,
	} {
		for _, zero := range []any{&MuxOpen{}, &MuxRequest{}, &MuxAnswer{}} {
			compareRead(t, []byte(in), zero)
		}
	}
}

func compareRead(t *testing.T, b []byte, zero any) {
	t.Helper()
	typ := reflect.TypeOf(zero).Elem()
	fast, slow := reflect.New(typ).Interface(), reflect.New(typ).Interface()
	hdr := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	ferr := ReadMuxHeader(bytes.NewReader(append(hdr, b...)), fast)
	serr := json.Unmarshal(b, slow)
	if (ferr == nil) != (serr == nil) || !reflect.DeepEqual(fast, slow) {
		t.Errorf("%s into %T: read %+v (%v), encoding/json %+v (%v)", b, zero, fast, ferr, slow, serr)
	}
}

func FuzzMuxHeaderRead(f *testing.F) {
	for _, h := range muxHeaders {
		j, _ := json.Marshal(h)
		f.Add(j)
	}
	f.Add([]byte(`{"status": -0, "accepted": false}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || len(b) > MaxMuxHeader {
			return
		}
		for _, zero := range []any{&MuxOpen{}, &MuxRequest{}, &MuxAnswer{}} {
			compareRead(t, b, zero)
		}
	})
}

func FuzzMuxHeaderWrite(f *testing.F) {
	f.Add("dev", "mod", "ssh", int64(5), int64(0), 200, true)
	f.Add("<", "&", "\u2028\xff", int64(-1), int64(1<<40), 0, false)
	f.Fuzz(func(t *testing.T, a, b, c string, n, m int64, st int, yes bool) {
		for _, h := range []any{
			MuxOpen{DeviceID: a, ModuleID: b, Name: c, ConnectTimeoutMs: n, ResponseTimeoutMs: m, UserAgent: a + c},
			MuxRequest{Name: a, RID: b, StreamID: c},
			MuxAnswer{Status: st, Accepted: yes, DeviceStatus: int(n), StreamID: a, ErrorCode: b, Message: c},
		} {
			j, err := json.Marshal(h)
			if err != nil || len(j) > MaxMuxHeader {
				continue
			}
			got, err := AppendMuxHeader(nil, h)
			if err != nil || !bytes.Equal(got[2:], j) {
				t.Fatalf("%#v: wrote %q (%v), encoding/json %q", h, got, err, j)
			}
		}
	})
}
