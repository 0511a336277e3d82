package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus of FuzzDecoder in testdata/fuzz/FuzzDecoder")

// FuzzDecoder checks Decoder.Next on arbitrary bytes: it never panics, never
// claims more bytes than it was given, fails only with the documented error
// types, the payload parsers accept every frame it accepts, and an accepted
// frame re-encodes to the same bytes (reserved flag bits aside, which
// encoders always send as 0). Framer.ReadFrame must agree with it. The seed
// corpus is in testdata/fuzz/FuzzDecoder (see fuzzSeeds).
func FuzzDecoder(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 1 << 16 // keeps the Framer's payload buffers small
		d := Decoder{MaxFrameSize: max}
		fr, n, err := d.Next(b)
		if n < 0 || n > len(b) {
			t.Fatalf("n = %d outside [0, %d]", n, len(b))
		}
		switch {
		case err != nil:
			if n != 0 || fr.Payload != nil {
				t.Fatalf("error %v with n = %d, %d payload bytes", err, n, len(fr.Payload))
			}
			if errors.Is(err, ErrProtocol) == errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("error %v is not exactly one of ErrProtocol, ErrFrameTooLarge", err)
			}
		case n == 0:
			if fr.Payload != nil {
				t.Fatal("payload with n = 0")
			}
			if len(b) < HeaderLen {
				if fr.Header != (Header{}) || FrameLen(b) != HeaderLen {
					t.Fatalf("header %v from %d bytes", fr.Header, len(b))
				}
			} else if uint64(HeaderLen)+uint64(fr.Length) <= uint64(len(b)) || FrameLen(b) != HeaderLen+int(fr.Length) {
				t.Fatalf("incomplete, yet %v fits in %d bytes", fr.Header, len(b))
			}
		default:
			if n != HeaderLen+int(fr.Length) || n != FrameLen(b) || !bytes.Equal(fr.Payload, b[HeaderLen:n]) {
				t.Fatalf("n = %d for %v", n, fr.Header)
			}
			if h, err := ParseHeader(b); err != nil || h != fr.Header {
				t.Fatalf("ParseHeader = %v, %v; Next = %v", h, err, fr.Header)
			}
			checkReencode(t, fr, b[:n])
		}

		// Framer.ReadFrame on the same bytes agrees.
		framer := NewFramer(nil, bytes.NewReader(b))
		framer.MaxFrameSize = max
		got, rerr := framer.ReadFrame()
		switch {
		case err != nil:
			if errors.Is(rerr, ErrProtocol) != errors.Is(err, ErrProtocol) || errors.Is(rerr, ErrFrameTooLarge) != errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("ReadFrame error %v, Next error %v", rerr, err)
			}
		case n == 0:
			want := io.ErrUnexpectedEOF
			if len(b) == 0 {
				want = io.EOF
			}
			if rerr != want {
				t.Fatalf("ReadFrame on an incomplete frame: %v, want %v", rerr, want)
			}
		default:
			if rerr != nil || got.Header != fr.Header || !bytes.Equal(got.Payload, fr.Payload) {
				t.Fatalf("ReadFrame = %v, %v; Next = %v", got.Header, rerr, fr.Header)
			}
		}
	})
}

// definedFlags returns the flag bits that mean something on h; the others
// are reserved, and encoders send them as 0.
func definedFlags(h Header) uint8 {
	switch {
	case h.Type.Extension():
		return 0xff // unknown: AppendHeader keeps them
	case h.Type == TypeRequest, h.Type == TypeResponse:
		return FlagMore | FlagMetadata
	case h.Type == TypeData:
		return FlagMore
	case h.Type == TypeError && h.ID != 0:
		return FlagMetadata
	}
	return 0
}

// dropEmptyBlock removes from frame the empty metadata block (L = 0) at
// offset off, and its flag: the encoders send no block for empty metadata.
func dropEmptyBlock(frame []byte, off int) []byte {
	frame = append(frame[:off:off], frame[off+metadataLenLen:]...)
	binary.BigEndian.PutUint32(frame, binary.BigEndian.Uint32(frame)-metadataLenLen)
	frame[5] &^= FlagMetadata
	return frame
}

// checkReencode parses f's payload, which must parse, and encodes it again;
// the result must be raw with its reserved flag bits zeroed. What receivers
// accept but encoders never produce is set aside: messages longer than
// MaxErrorMessageLen (encoders truncate them), empty metadata blocks (not
// sent), a CANCEL payload (ignored), a HELLO that is not four settings in id
// order.
func checkReencode(t *testing.T, f Frame, raw []byte) {
	t.Helper()
	want := append([]byte(nil), raw...)
	want[5] &= definedFlags(f.Header)
	var re []byte
	switch f.Type {
	case TypeRequest:
		to, m, md, body, err := ParseRequest(f.Flags, f.Payload)
		if err != nil {
			t.Fatalf("Next accepted a REQUEST that ParseRequest rejects: %v", err)
		}
		if f.HasMetadata() && md.Len() == 0 {
			want = dropEmptyBlock(want, HeaderLen+requestFixedLen+len(m))
		}
		re = AppendRequest(nil, f.ID, f.More(), to, string(m), md.Metadata(), body)
	case TypeResponse:
		md, body, err := ParseResponse(f.Flags, f.Payload)
		if err != nil {
			t.Fatalf("Next accepted a RESPONSE that ParseResponse rejects: %v", err)
		}
		if f.HasMetadata() && md.Len() == 0 {
			want = dropEmptyBlock(want, HeaderLen)
		}
		re = AppendResponse(nil, f.ID, f.More(), md.Metadata(), body)
	case TypeData:
		re = AppendData(nil, f.ID, f.More(), f.Payload)
	case TypeError:
		c, md, msg, err := ParseError(f.ID, f.Flags, f.Payload)
		if err != nil {
			t.Fatalf("Next accepted an ERROR that ParseError rejects: %v", err)
		}
		if len(msg) > MaxErrorMessageLen {
			return
		}
		if f.HasMetadata() && md.Len() == 0 {
			want = dropEmptyBlock(want, HeaderLen+errorFixedLen)
		}
		re = AppendError(nil, f.ID, c, md.Metadata(), string(msg))
	case TypePing, TypePong:
		v, err := ParsePing(f.Payload)
		if err != nil {
			t.Fatalf("Next accepted a %v that ParsePing rejects: %v", f.Type, err)
		}
		if f.Type == TypePing {
			re = AppendPing(nil, v)
		} else {
			re = AppendPong(nil, v)
		}
	case TypeGoAway:
		last, r, msg, err := ParseGoAway(f.Payload)
		if err != nil {
			t.Fatalf("Next accepted a GOAWAY that ParseGoAway rejects: %v", err)
		}
		if len(msg) > MaxErrorMessageLen {
			return
		}
		re = AppendGoAway(nil, last, r, string(msg))
	case TypeCancel:
		want = want[:HeaderLen]
		binary.BigEndian.PutUint32(want, 0)
		re = AppendCancel(nil, f.ID)
	case TypeHello:
		h, err := ParseHello(f.Payload)
		if err != nil {
			t.Fatalf("Next accepted a HELLO that ParseHello rejects: %v", err)
		}
		re = AppendHello(nil, h)
		if again, err := ParseHello(re[HeaderLen:]); err != nil || again != h {
			t.Fatalf("HELLO %+v re-encoded parses as %+v, %v", h, again, err)
		}
		if !canonicalHello(f.Payload) {
			return
		}
	default:
		if !f.Type.Extension() {
			t.Fatalf("Next accepted unknown type %v", f.Type)
		}
		re = append(AppendHeader(nil, f.Header), f.Payload...)
	}
	if !bytes.Equal(re, want) {
		t.Fatalf("re-encoded %v:\n got %x\nwant %x", f.Header, re, want)
	}
}

// canonicalHello reports whether p is a HELLO payload as AppendHello writes
// them: reserved bytes 0, settings 1 to 4 in order.
func canonicalHello(p []byte) bool {
	if len(p) != helloFixedLen+4*settingLen || p[2] != 0 || p[3] != 0 {
		return false
	}
	for i := range 4 {
		if binary.BigEndian.Uint16(p[helloFixedLen+i*settingLen:]) != uint16(i+1) {
			return false
		}
	}
	return true
}

// fuzzSeeds is the seed corpus of FuzzDecoder: valid frames of every type,
// and frames that break each kind of rule.
func fuzzSeeds() map[string][]byte {
	seeds := map[string][]byte{
		"bad-reserved":      header(8, 4, 0, 1, 0),
		"reserved-type":     header(0, 10, 0, 0, 1),
		"request-id-0":      frame(TypeRequest, 0, 0, 0, 0, 0, 0, 1, 'm'),
		"oversized":         header(1<<30, byte(TypeData), 0, 0, 1),
		"truncated-header":  AppendResponse(nil, 1, false, nil, []byte("hi"))[:10],
		"truncated-payload": AppendRequest(nil, 1, false, 0, "echo", testMD, nil)[:30],
		"two-frames":        cat(AppendRequest(nil, 3, true, 0, "a", nil, nil), AppendData(nil, 3, false, []byte("b")), AppendPing(nil, 1)),
		"flags-set":         cat(header(8, 5, 0xff, 0, 0), make([]byte, 8)),
		"error-more":        cat(header(2, 3, FlagMore, 0, 1), []byte{0, 5}),
		"error-conn-flags":  cat(header(4, 3, 0xfe, 0, 0), []byte{0, 3, 0, 0}),
		"request-empty-md":  frame(TypeRequest, FlagMetadata, 1, 0, 0, 0, 0, 1, 'm', 0, 0, 'b'),
		"cancel-payload":    frame(TypeCancel, 0, 1, 1, 2, 3),
		"hello-unordered":   frame(TypeHello, 0, 0, cat([]byte{0, 3, 0xff, 0xff}, setting(9, 1), setting(4, 5), setting(1, 1<<20), setting(1, 1<<15))...),
		"ping-7-bytes":      cat(header(7, 4, 0, 0, 0), make([]byte, 7)),
	}
	for name, b := range validFrames() {
		seeds[name] = b
	}
	for _, name := range []string{"request-empty-method", "request-method-overrun", "hello-max-frame-size-low", "request-md-past-payload", "response-md-entry-past-L", "error-md-duplicate-key", "response-md-uppercase-key", "request-md-65-entries"} {
		seeds["bad-"+name] = badPayloads()[name]
	}
	return seeds
}

// TestFuzzCorpus checks that testdata/fuzz/FuzzDecoder holds fuzzSeeds;
// with -update-corpus, it writes them there.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecoder")
	for name, b := range fuzzSeeds() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		path := filepath.Join(dir, name)
		if *updateCorpus {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Errorf("%s is not up to date (go test -run TestFuzzCorpus -update-corpus): %v", path, err)
		}
	}
}
