package sim

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
)

// h2Conn sits between TLS and golang.org/x/net/http2's server on an APNs
// connection and gives it Apple's stream limit, which x/net cannot change
// per connection. It reads the frame headers passing each way, never the
// header blocks: HPACK state stays the server's and the client's alone.
//
// The server is configured with MaxConcurrentStreams = max. On the way out,
// h2Conn rewrites SETTINGS_MAX_CONCURRENT_STREAMS in the server's first
// SETTINGS frame to initial, and after raise it injects, between two whole
// frames, a SETTINGS frame raising the limit to max. On the way in, it
// removes the client's acknowledgement of that injected frame: the server
// never sent it, and would treat an unexpected ACK as a protocol error.
//
// Until the raise, h2Conn also enforces the initial limit, which x/net
// does not know: it counts the streams open on the connection, and a
// stream the client opens beyond the limit is refused with RST_STREAM
// REFUSED_STREAM to the client (which may retry it: it was not processed)
// and a RST_STREAM CANCEL to the server right after its headers, so the
// handler sees a reset request and delivers nothing. Streams the client
// opened before acknowledging the server's first SETTINGS are exempt: until
// then the client could not know the limit (RFC 9113, section 6.5.3), and
// Go's transport assumes 100.
type h2Conn struct {
	net.Conn     // the TLS connection
	initial, max uint32
	refused      *atomic.Int64 // counts refused streams

	// raisePending asks the writer to inject the raising SETTINGS frame;
	// acksToDrop counts injected frames whose ACK the reader must remove.
	raisePending atomic.Bool
	acksToDrop   atomic.Int32

	// smu guards the stream accounting shared by reader and writer.
	smu    sync.Mutex
	raised bool                // no limit but x/net's from now on
	open   map[uint32]struct{} // streams open on the connection
	rsts   []byte              // RST_STREAM frames for the client, not yet written

	wmu sync.Mutex
	// passOut is set once the limit is raised and nothing is left to
	// inject: writes then go straight to TLS.
	passOut     bool
	injected    bool
	sawSettings bool // the server's first SETTINGS frame has passed
	// inHeaderBlock is set between a HEADERS frame without END_HEADERS
	// and its last CONTINUATION, where no other frame may be sent.
	inHeaderBlock bool
	w             frameScan
	wKind         int
	out           []byte

	r       frameScan
	preface int // client preface bytes still to pass
	acks    int // SETTINGS ACKs seen from the client
	lastID  uint32
	cancel  uint32 // a refused stream whose header block is still arriving
	rInBlk  bool   // inside a client header block
	pass    bool
	rbuf    []byte
	pbuf    []byte
	pending []byte // filtered bytes not yet returned
	rerr    error
}

// HTTP/2 frame constants (RFC 9113).
const (
	frameHeaderLen      = 9
	frameData           = 0x0
	frameHeaders        = 0x1
	frameRSTStream      = 0x3
	frameSettings       = 0x4
	framePushPromise    = 0x5
	frameContinuation   = 0x9
	flagAck             = 0x1
	flagEndStream       = 0x1
	flagEndHeaders      = 0x4
	settingMaxStreams   = 0x3
	errCodeRefused      = 0x7
	errCodeCancel       = 0x8
	clientPrefaceLength = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)

// frameScan follows frame boundaries in a byte stream that arrives in
// arbitrary pieces.
type frameScan struct {
	hdr       [frameHeaderLen]byte
	hdrN      int    // header bytes collected
	left      uint32 // payload bytes of the current frame still to come
	pos       uint32 // payload bytes of the current frame already seen
	settingID [2]byte
}

func (f *frameScan) atBoundary() bool { return f.hdrN == 0 && f.left == 0 }

func (f *frameScan) header() (length uint32, typ, flags byte, stream uint32) {
	return uint32(f.hdr[0])<<16 | uint32(f.hdr[1])<<8 | uint32(f.hdr[2]), f.hdr[3], f.hdr[4],
		binary.BigEndian.Uint32(f.hdr[5:]) &^ (1 << 31)
}

func newH2Conn(c net.Conn, initial, max uint32, refused *atomic.Int64) *h2Conn {
	return &h2Conn{Conn: c, initial: initial, max: max, refused: refused,
		preface: clientPrefaceLength, open: make(map[uint32]struct{})}
}

// ConnectionState passes on the TLS state, which x/net/http2 checks and
// hands to handlers as Request.TLS.
func (c *h2Conn) ConnectionState() tls.ConnectionState {
	if cs, ok := c.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return cs.ConnectionState()
	}
	return tls.ConnectionState{}
}

// raise lifts the limit to max at once, and asks for the SETTINGS frame
// that tells the client at the next frame boundary.
func (c *h2Conn) raise() {
	c.smu.Lock()
	c.raised = true
	c.smu.Unlock()
	if c.initial != c.max {
		c.raisePending.Store(true)
	}
}

// closeStream forgets a stream that ended.
func (c *h2Conn) closeStream(id uint32) {
	c.smu.Lock()
	delete(c.open, id)
	c.smu.Unlock()
}

// Write passes the server's frames to TLS, rewriting and injecting as
// described on h2Conn. It never changes p: a Writer must not.
func (c *h2Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.passOut {
		return c.Conn.Write(p)
	}
	out := c.out[:0]
	n := len(p)
	for len(p) > 0 {
		if c.w.left == 0 {
			if c.w.hdrN == 0 {
				out = c.inject(out)
			}
			k := copy(c.w.hdr[c.w.hdrN:], p)
			c.w.hdrN += k
			p = p[k:]
			if c.w.hdrN < frameHeaderLen {
				break
			}
			c.w.hdrN = 0
			out = append(out, c.w.hdr[:]...)
			length, typ, flags, id := c.w.header()
			c.w.left, c.w.pos = length, 0
			c.wKind = frameData // anything but SETTINGS passes unchanged
			switch typ {
			case frameSettings:
				if flags&flagAck == 0 && !c.sawSettings {
					c.sawSettings = true
					c.wKind = frameSettings
				}
			case frameRSTStream:
				c.closeStream(id)
			case frameData:
				if flags&flagEndStream != 0 {
					c.closeStream(id)
				}
			}
			switch typ {
			case frameHeaders, framePushPromise, frameContinuation:
				c.inHeaderBlock = flags&flagEndHeaders == 0
				if typ == frameHeaders && flags&flagEndStream != 0 {
					c.closeStream(id)
				}
			}
			continue
		}
		k := min(uint32(len(p)), c.w.left)
		if c.wKind == frameSettings {
			for i, b := range p[:k] {
				out = append(out, c.rewriteSetting(c.w.pos+uint32(i), b))
			}
		} else {
			out = append(out, p[:k]...)
		}
		c.w.pos += k
		c.w.left -= k
		p = p[k:]
	}
	if c.w.atBoundary() {
		out = c.inject(out)
		if c.injected && !c.inHeaderBlock {
			c.smu.Lock()
			c.passOut = len(c.rsts) == 0
			c.smu.Unlock()
		}
	}
	c.out = out
	if len(out) == 0 {
		return n, nil
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	if cap(c.out) > 64<<10 || c.passOut {
		c.out = nil // do not pin a buffer that is no longer needed
	}
	return n, nil
}

// rewriteSetting returns byte b at pos of the first SETTINGS frame's
// payload, with the value of MAX_CONCURRENT_STREAMS replaced by the initial
// limit. Each setting is a 2-byte identifier and a 4-byte value.
func (c *h2Conn) rewriteSetting(pos uint32, b byte) byte {
	off := pos % 6
	if off < 2 {
		c.w.settingID[off] = b
		return b
	}
	if binary.BigEndian.Uint16(c.w.settingID[:]) != settingMaxStreams {
		return b
	}
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], c.initial)
	return v[off-2]
}

// inject appends, where a frame may be sent, the resets of refused streams
// and the raising SETTINGS frame. The caller holds wmu.
func (c *h2Conn) inject(out []byte) []byte {
	if c.inHeaderBlock || !c.sawSettings {
		return out
	}
	c.smu.Lock()
	out = append(out, c.rsts...)
	c.rsts = c.rsts[:0]
	c.smu.Unlock()
	if c.raisePending.Load() {
		c.raisePending.Store(false)
		c.injected = true
		// The reader must be ready to drop the ACK before the client can
		// see the frame.
		c.acksToDrop.Add(1)
		out = append(out, 0, 0, 6, frameSettings, 0, 0, 0, 0, 0)
		out = binary.BigEndian.AppendUint16(out, settingMaxStreams)
		out = binary.BigEndian.AppendUint32(out, c.max)
	}
	return out
}

// flushRSTs writes pending resets now if the server's stream of frames is
// at a boundary; otherwise the writer sends them at the next one, which
// comes with the rest of the frame it is writing.
func (c *h2Conn) flushRSTs() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.passOut || !c.w.atBoundary() {
		return
	}
	if out := c.inject(nil); len(out) > 0 {
		c.Conn.Write(out) // an error surfaces on the server's next write
	}
}

// Read passes the client's bytes to the server, enforcing the initial
// stream limit and removing the SETTINGS ACK that answers an injected
// frame. Once the limit is raised and that ACK is gone it is a plain read.
func (c *h2Conn) Read(p []byte) (int, error) {
	for {
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.pass {
			return c.Conn.Read(p)
		}
		if c.rbuf == nil {
			c.rbuf = make([]byte, 16<<10)
		}
		n, err := c.Conn.Read(c.rbuf)
		c.rerr = err
		var refusedAny bool
		c.pending, refusedAny = c.filter(c.rbuf[:n], c.pbuf[:0])
		c.pbuf = c.pending[:0]
		if refusedAny {
			c.flushRSTs()
		}
		if c.pass {
			c.rbuf, c.pbuf = nil, nil
		}
	}
}

// filter appends to out the bytes of in the server should see, and
// reports whether it refused a stream.
func (c *h2Conn) filter(in, out []byte) ([]byte, bool) {
	refusedAny := false
	for len(in) > 0 {
		if c.pass {
			return append(out, in...), refusedAny
		}
		if c.preface > 0 {
			k := min(len(in), c.preface)
			out = append(out, in[:k]...)
			c.preface -= k
			in = in[k:]
			continue
		}
		if c.r.left > 0 {
			k := min(uint32(len(in)), c.r.left)
			out = append(out, in[:k]...)
			c.r.left -= k
			in = in[k:]
			if c.r.left == 0 {
				out = c.endOfFrame(out)
			}
			continue
		}
		k := copy(c.r.hdr[c.r.hdrN:], in)
		c.r.hdrN += k
		in = in[k:]
		if c.r.hdrN < frameHeaderLen {
			break // the rest of the header comes with the next read
		}
		c.r.hdrN = 0
		length, typ, flags, id := c.r.header()
		switch typ {
		case frameSettings:
			if flags&flagAck != 0 && length == 0 {
				c.acks++
				// The first ACK answers the server's own SETTINGS; a
				// later one answers the frame h2Conn injected.
				if c.acks > 1 && c.acksToDrop.Load() > 0 {
					c.acksToDrop.Add(-1)
					// A connection is raised once: nothing is left to filter.
					c.pass = true
					continue
				}
			}
		case frameRSTStream:
			c.closeStream(id)
		case frameHeaders:
			c.rInBlk = flags&flagEndHeaders == 0
			if id > c.lastID {
				c.lastID = id
				if c.admit(id) {
					refusedAny = true
					c.cancel = id
				}
			}
		case frameContinuation:
			c.rInBlk = flags&flagEndHeaders == 0
		}
		out = append(out, c.r.hdr[:]...)
		c.r.left = length
		if length == 0 {
			out = c.endOfFrame(out)
		}
	}
	return out, refusedAny
}

// admit opens stream id, or refuses it and reports true.
func (c *h2Conn) admit(id uint32) (refuse bool) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if !c.raised && c.acks > 0 && uint32(len(c.open)) >= c.initial {
		c.rsts = appendRST(c.rsts, id, errCodeRefused)
		c.refused.Add(1)
		return true
	}
	c.open[id] = struct{}{}
	return false
}

// endOfFrame runs when a client frame has passed whole: once a refused
// stream's header block is complete, the server is told the stream was
// reset.
func (c *h2Conn) endOfFrame(out []byte) []byte {
	if c.cancel != 0 && !c.rInBlk {
		out = appendRST(out, c.cancel, errCodeCancel)
		c.cancel = 0
	}
	return out
}

func appendRST(b []byte, id, code uint32) []byte {
	b = append(b, 0, 0, 4, frameRSTStream, 0)
	b = binary.BigEndian.AppendUint32(b, id)
	return binary.BigEndian.AppendUint32(b, code)
}
