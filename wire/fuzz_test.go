package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzDecoder checks Decoder.Next on arbitrary bytes: it never panics, never
// claims more bytes than it was given, fails only with the documented error
// types, and a frame it accepts re-encodes to the same bytes (flags aside,
// which encoders always send as 0). Framer.ReadFrame must agree with it.
// The seed corpus is in testdata/fuzz/FuzzDecoder.
func FuzzDecoder(f *testing.F) {
	for _, b := range validFrames() {
		f.Add(b)
	}
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
				if fr.Header != (Header{}) {
					t.Fatalf("header %v from %d bytes", fr.Header, len(b))
				}
			} else if uint64(HeaderLen)+uint64(fr.Length) <= uint64(len(b)) {
				t.Fatalf("incomplete, yet %v fits in %d bytes", fr.Header, len(b))
			}
		default:
			if n != HeaderLen+int(fr.Length) || !bytes.Equal(fr.Payload, b[HeaderLen:n]) {
				t.Fatalf("n = %d for %v", n, fr.Header)
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

// checkReencode parses f's payload and encodes it again; the result must be
// raw with its flags byte zeroed. Messages longer than MaxErrorMessageLen are
// accepted by receivers but truncated by encoders, so they are not compared.
func checkReencode(t *testing.T, f Frame, raw []byte) {
	t.Helper()
	var re []byte
	switch f.Type {
	case TypeRequest:
		to, m, body, err := ParseRequest(f.Payload)
		if err != nil {
			t.Fatalf("Next accepted a REQUEST that ParseRequest rejects: %v", err)
		}
		re = AppendRequest(nil, f.ID, to, string(m), body)
	case TypeResponse:
		re = AppendResponse(nil, f.ID, f.Payload)
	case TypeError:
		c, msg, err := ParseError(f.Payload)
		if err != nil {
			t.Fatalf("Next accepted an ERROR that ParseError rejects: %v", err)
		}
		if len(msg) > MaxErrorMessageLen {
			return
		}
		re = AppendError(nil, f.ID, c, string(msg))
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
	default:
		t.Fatalf("Next accepted unknown type %v", f.Type)
	}
	want := append([]byte(nil), raw...)
	want[5] = 0 // flags
	if !bytes.Equal(re, want) {
		t.Fatalf("re-encoded %v:\n got %x\nwant %x", f.Header, re, want)
	}
}
