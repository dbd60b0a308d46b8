package sim

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// fakeConn records writes and serves reads in the chunk sizes it is given.
type fakeConn struct {
	net.Conn // nil: only Read and Write are used
	in       []byte
	chunks   []byte // sizes of successive reads (1..256); cycles
	k        int
	out      bytes.Buffer
}

func (f *fakeConn) Write(p []byte) (int, error) { return f.out.Write(p) }

func (f *fakeConn) Read(p []byte) (int, error) {
	if len(f.in) == 0 {
		return 0, io.EOF
	}
	n := len(f.in)
	if len(f.chunks) > 0 {
		n = int(f.chunks[f.k%len(f.chunks)]) + 1
		f.k++
	}
	n = min(n, len(p), len(f.in))
	copy(p, f.in[:n])
	f.in = f.in[n:]
	return n, nil
}

// serverStream is what x/net's server might write: its SETTINGS, an ACK,
// a response, a reset, data.
func serverStream(t testing.TB) []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20},
	)
	fr.WriteSettingsAck()
	fr.WriteWindowUpdate(0, 1<<20)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndHeaders: false})
	fr.WriteContinuation(1, true, []byte{0x40, 0x01, 'a', 0x01, 'b'})
	fr.WriteRSTStream(3, http2.ErrCodeInternal)
	fr.WriteData(5, true, bytes.Repeat([]byte("x"), 300))
	fr.WriteRSTStream(7, http2.ErrCodeInternal)
	return b.Bytes()
}

// rewrite passes stream through an h2Conn writer in pieces cut at cuts.
func rewrite(stream, cuts []byte) []byte {
	fc := &fakeConn{}
	c := newH2Conn(fc, 1, 1000, new(atomic.Int64))
	c.raise()
	for len(stream) > 0 {
		n := len(stream)
		if len(cuts) > 0 {
			n = min(n, int(cuts[0])+1)
			cuts = cuts[1:]
		}
		c.Write(stream[:n])
		stream = stream[n:]
	}
	return fc.out.Bytes()
}

func TestH2ConnWrite(t *testing.T) {
	out := rewrite(serverStream(t), nil)
	fr := http2.NewFramer(nil, bytes.NewReader(out))
	var got []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				got = append(got, "SETTINGS ACK")
				break
			}
			v, _ := f.Value(http2.SettingMaxConcurrentStreams)
			w, _ := f.Value(http2.SettingInitialWindowSize)
			got = append(got, "SETTINGS max="+itoa(v)+" window="+itoa(w))
		case *http2.RSTStreamFrame:
			got = append(got, "RST "+itoa(f.StreamID)+" "+f.ErrCode.String())
		default:
			got = append(got, f.Header().Type.String())
		}
	}
	want := []string{
		"SETTINGS max=1 window=1048576", // rewritten
		"SETTINGS max=1000 window=0",    // injected after it
		"SETTINGS ACK", "WINDOW_UPDATE", "HEADERS", "CONTINUATION",
		"RST 3 INTERNAL_ERROR",
		"DATA",
		"RST 7 INTERNAL_ERROR",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("frames:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// FuzzH2ConnWrite checks that however x/net's writes split frames, the
// bytes on the wire are the same.
func FuzzH2ConnWrite(f *testing.F) {
	stream := serverStream(f)
	want := rewrite(stream, nil)
	f.Add([]byte{0})
	f.Add([]byte{8, 9, 3})
	f.Add([]byte{255, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, cuts []byte) {
		if got := rewrite(stream, cuts); !bytes.Equal(got, want) {
			t.Fatalf("cuts %v changed the output", cuts)
		}
	})
}

// clientStream is what a client sends: preface, SETTINGS, two streams
// before it acknowledges the server's SETTINGS, the ACK, a third stream
// (one too many), and the ACK of the injected SETTINGS. want is what the
// server must see: the injected ACK gone, and the third stream reset right
// after its header block.
func clientStream() (in, want []byte) {
	var b, w bytes.Buffer
	both := io.MultiWriter(&b, &w)
	io.WriteString(both, http2.ClientPreface)
	fr := http2.NewFramer(both, nil)
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}, EndHeaders: true})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: []byte{0x82}, EndHeaders: true})
	fr.WriteSettingsAck()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: []byte{0x82}, EndHeaders: false})
	fr.WriteContinuation(5, true, []byte{0x84})
	http2.NewFramer(&w, nil).WriteRSTStream(5, http2.ErrCodeCancel)
	fr.WriteData(5, true, []byte(`{"aps":{}}`))
	fr.WriteData(1, true, []byte(`{"aps":{}}`))
	http2.NewFramer(&b, nil).WriteSettingsAck() // answers the injected frame: must vanish
	fr.WriteData(3, true, bytes.Repeat([]byte("y"), 100))
	return b.Bytes(), w.Bytes()
}

// filterRead passes the client's stream through an h2Conn read in chunks,
// after the server's SETTINGS went out, and returns what the server read
// and what the client was sent.
func filterRead(t testing.TB, in, chunks []byte) (read, sent []byte, err error) {
	fc := &fakeConn{in: in, chunks: chunks}
	c := newH2Conn(fc, 1, 1000, new(atomic.Int64))
	var settings bytes.Buffer
	http2.NewFramer(&settings, nil).WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000})
	c.Write(settings.Bytes())
	c.acksToDrop.Store(1)
	var out bytes.Buffer
	buf := make([]byte, 7)
	for {
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), fc.out.Bytes(), nil
		}
		if err != nil {
			return nil, nil, err
		}
		if n == 0 {
			return nil, nil, io.ErrNoProgress
		}
	}
}

// wantSent is what the client must receive: the rewritten SETTINGS and the
// refusal of stream 5.
func wantSent() []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	fr.WriteRSTStream(5, http2.ErrCodeRefusedStream)
	return b.Bytes()
}

func TestH2ConnRead(t *testing.T) {
	in, want := clientStream()
	got, sent, err := filterRead(t, in, nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("server read %d bytes (%v), want %d: without the injected ACK, stream 5 reset", len(got), err, len(want))
	}
	if !bytes.Equal(sent, wantSent()) {
		t.Fatalf("client was sent %x, want %x", sent, wantSent())
	}
}

// FuzzH2ConnRead checks the limit and the ACK removal however TLS splits
// the reads.
func FuzzH2ConnRead(f *testing.F) {
	in, want := clientStream()
	f.Add([]byte{0})
	f.Add([]byte{3, 200, 8})
	f.Fuzz(func(t *testing.T, chunks []byte) {
		got, sent, err := filterRead(t, in, chunks)
		if err != nil || !bytes.Equal(got, want) || !bytes.Equal(sent, wantSent()) {
			t.Fatalf("chunks %v: read %d bytes, sent %x, %v", chunks, len(got), sent, err)
		}
	})
}

func FuzzParseProtoDuration(f *testing.F) {
	for _, s := range []string{"3.5s", "0s", "2419200s", "1.000000001s", "s", ".5s", "1.s", "-1s", "1e3s", "99999999999999999999s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseProtoDuration(s)
		if !ok {
			return
		}
		if d < 0 || !strings.HasSuffix(s, "s") {
			t.Fatalf("%q parsed as %v", s, d)
		}
		// The SDK's own formatting of the value must parse back to it.
		back, ok := parseProtoDuration(fmtDuration(d))
		if !ok || back != d {
			t.Fatalf("%q = %v does not round-trip (%v)", s, d, back)
		}
	})
}

// fmtDuration writes d as the Admin SDK does.
func fmtDuration(d time.Duration) string {
	secs := d / time.Second
	if nanos := d - secs*time.Second; nanos > 0 {
		return fmt.Sprintf("%d.%09ds", secs, nanos)
	}
	return fmt.Sprintf("%ds", secs)
}

func FuzzSplitToken(f *testing.F) {
	f.Add([]byte(`{"message":{"token":"abc","data":{"a":"b"}}}`))
	f.Add([]byte(`{"message":{"token":"a\"b"}}`))
	f.Add([]byte(`{"message":{"token":"a","data":{"token":"b"}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		head, tail, tok, ok := splitToken(body)
		if !ok {
			return
		}
		if string(head)+tok+string(tail) != string(body) || strings.ContainsAny(tok, `"\`) {
			t.Fatalf("split %q into %q %q %q", body, head, tok, tail)
		}
	})
}

func FuzzParseJWS(f *testing.F) {
	s := newSim(f, Config{})
	f.Add(bearerFor(f, s))
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		jwt, err := parseJWS(tok)
		if err != nil {
			return
		}
		// Whatever parses, a signature over changed input never verifies.
		_, key := testKeys()
		jwt.signingInput += "x"
		if jwt.verifyES256(&key.PublicKey) {
			t.Fatalf("%q verified after tampering", tok)
		}
	})
}
