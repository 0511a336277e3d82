package wire

import (
	"io"
	"math/bits"
	"sync"
)

// Framer reads and writes frames on a blocking io.Reader and io.Writer. It is
// meant for tests, tools and minimal clients; tcppro's sessions decode with
// Decoder from their own buffers. ClientHandshake and ServerHandshake run
// the HELLO exchange that opens a connection.
//
// ReadFrame may run concurrently with the Write methods (one reader and one
// writer goroutine), but ReadFrame must not run concurrently with itself, nor
// a Write method with another, and the handshake methods, which both read
// and write, with any other method. After an error from either side the
// connection must be closed: the stream is out of step, or (for a protocol or
// size error) the protocol requires it.
//
// Framer issues one or two Read calls per frame (header, payload) and does no
// read-ahead; wrap the reader in a bufio.Reader to save system calls.
type Framer struct {
	// MaxFrameSize is the largest payload ReadFrame accepts, in bytes (the
	// MAX_FRAME_SIZE announced to the peer); 0 means DefaultMaxFrameSize.
	// It does not limit what is written: the caller keeps its frames within
	// the peer's MAX_FRAME_SIZE.
	MaxFrameSize uint32

	r    io.Reader
	hdr  [HeaderLen]byte
	rbuf []byte  // small payload buffer, kept for the Framer's life
	rbig *[]byte // pooled buffer holding the last large payload

	w    io.Writer
	wbuf []byte  // small frame buffer, kept for the Framer's life
	wbig *[]byte // pooled buffer of the large frame being written
}

// NewFramer returns a Framer that writes frames to w and reads them from r.
// Either may be nil if that direction is not used.
func NewFramer(w io.Writer, r io.Reader) *Framer {
	return &Framer{w: w, r: r}
}

// ReadFrame reads the next frame. Its payload is valid until the next call to
// ReadFrame.
//
// A header declaring a payload above MaxFrameSize is refused with a
// *FrameTooLargeError before any payload buffer is allocated or read; a
// malformed frame is refused with a *ProtocolError (the checks are those of
// Decoder.Next). A stream that ends cleanly between frames gives io.EOF, one
// that ends inside a frame io.ErrUnexpectedEOF. On errors, the returned
// frame's Header holds whatever header was decoded.
//
// Payload buffers are reused: small ones stay with the Framer, large ones come
// from a pool of size classes and go back to it on the next call, so a single
// large frame does not keep its memory tied to the Framer.
func (fr *Framer) ReadFrame() (Frame, error) {
	if fr.rbig != nil {
		putBuf(fr.rbig)
		fr.rbig = nil
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return Frame{}, err // io.EOF if nothing was read, else io.ErrUnexpectedEOF
	}
	h, err := decodeHeader(fr.hdr[:], fr.MaxFrameSize)
	if err != nil {
		return Frame{Header: h}, err
	}
	payload := fr.readBuf(int(h.Length))
	if _, err := io.ReadFull(fr.r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{Header: h}, err
	}
	if err := checkPayload(h, payload); err != nil {
		return Frame{Header: h}, err
	}
	return Frame{Header: h, Payload: payload}, nil
}

func (fr *Framer) readBuf(n int) []byte {
	if n > keepBufLen {
		fr.rbig = getBuf(n)
		return *fr.rbig
	}
	if cap(fr.rbuf) < n {
		fr.rbuf = make([]byte, smallBufCap(n))
	}
	return fr.rbuf[:n:n]
}

// WriteRequest writes a REQUEST frame with one Write call; see AppendRequest.
func (fr *Framer) WriteRequest(id uint64, more bool, timeoutMillis uint32, method string, md Metadata, chunk []byte) error {
	buf := fr.writeBuf(HeaderLen + RequestOverhead(method, md) + len(chunk))
	return fr.flush(AppendRequest(buf, id, more, timeoutMillis, method, md, chunk))
}

// WriteResponse writes a RESPONSE frame with one Write call; see
// AppendResponse.
func (fr *Framer) WriteResponse(id uint64, more bool, md Metadata, chunk []byte) error {
	buf := fr.writeBuf(HeaderLen + ResponseOverhead(md) + len(chunk))
	return fr.flush(AppendResponse(buf, id, more, md, chunk))
}

// WriteData writes a DATA frame with one Write call; see AppendData.
func (fr *Framer) WriteData(id uint64, more bool, chunk []byte) error {
	buf := fr.writeBuf(HeaderLen + len(chunk))
	return fr.flush(AppendData(buf, id, more, chunk))
}

// WriteError writes an ERROR frame with one Write call; see AppendError.
func (fr *Framer) WriteError(id uint64, code Code, md Metadata, msg string) error {
	n := HeaderLen + errorFixedLen + min(len(msg), MaxErrorMessageLen)
	if id != 0 {
		n += md.EncodedLen()
	}
	return fr.flush(AppendError(fr.writeBuf(n), id, code, md, msg))
}

// WritePing writes a PING frame with one Write call; see AppendPing.
func (fr *Framer) WritePing(data uint64) error {
	return fr.flush(AppendPing(fr.writeBuf(HeaderLen+pingLen), data))
}

// WritePong writes a PONG frame with one Write call; see AppendPong.
func (fr *Framer) WritePong(data uint64) error {
	return fr.flush(AppendPong(fr.writeBuf(HeaderLen+pingLen), data))
}

// WriteGoAway writes a GOAWAY frame with one Write call; see AppendGoAway.
func (fr *Framer) WriteGoAway(lastID uint64, reason Reason, msg string) error {
	buf := fr.writeBuf(HeaderLen + goAwayFixedLen + min(len(msg), MaxErrorMessageLen))
	return fr.flush(AppendGoAway(buf, lastID, reason, msg))
}

// WriteCancel writes a CANCEL frame with one Write call; see AppendCancel.
func (fr *Framer) WriteCancel(id uint64) error {
	return fr.flush(AppendCancel(fr.writeBuf(HeaderLen), id))
}

// WriteHello writes a HELLO frame with one Write call; see AppendHello.
func (fr *Framer) WriteHello(h Hello) error {
	return fr.flush(AppendHello(fr.writeBuf(HeaderLen+helloFixedLen+4*settingLen), h))
}

// writeBuf returns an empty buffer with room for a frame of n bytes: the
// Framer's own for small frames, a pooled one for large frames.
func (fr *Framer) writeBuf(n int) []byte {
	if n > keepBufLen {
		fr.wbig = getBuf(n)
		return (*fr.wbig)[:0]
	}
	if cap(fr.wbuf) < n {
		fr.wbuf = make([]byte, 0, smallBufCap(n))
	}
	return fr.wbuf[:0]
}

func (fr *Framer) flush(frame []byte) error {
	n, err := fr.w.Write(frame)
	if fr.wbig != nil {
		// An io.Writer must not retain frame, so the pooled buffer is free.
		putBuf(fr.wbig)
		fr.wbig = nil
	}
	if err == nil && n < len(frame) {
		err = io.ErrShortWrite
	}
	return err
}

// Buffers up to keepBufLen stay with a Framer; larger ones are pooled in
// power-of-two size classes from 1<<minPoolShift to 1<<maxPoolShift bytes.
// Larger still are allocated for the frame and left to the garbage collector.
// sync.Pool drops idle buffers over a couple of GC cycles, so a burst of large
// frames does not pin memory for ever.
const (
	keepBufLen   = 16 << 10
	minPoolShift = 15 // 32 KiB, the class above keepBufLen
	maxPoolShift = 24 // 16 MiB
)

var bufPools [maxPoolShift - minPoolShift + 1]sync.Pool // of *[]byte

// getBuf returns a buffer of length n > keepBufLen.
func getBuf(n int) *[]byte {
	shift := max(bits.Len(uint(n-1)), minPoolShift)
	if shift > maxPoolShift {
		b := make([]byte, n)
		return &b
	}
	if p, ok := bufPools[shift-minPoolShift].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<shift)
	return &b
}

// putBuf returns a buffer from getBuf to its pool.
func putBuf(p *[]byte) {
	c := cap(*p)
	if c&(c-1) != 0 {
		return // not a size class: allocated beyond the largest class
	}
	if shift := bits.Len(uint(c)) - 1; shift >= minPoolShift && shift <= maxPoolShift {
		bufPools[shift-minPoolShift].Put(p)
	}
}

// smallBufCap rounds n up to a power of two of at least 512 bytes.
func smallBufCap(n int) int {
	if n <= 512 {
		return 512
	}
	return 1 << bits.Len(uint(n-1))
}
