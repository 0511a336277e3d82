package wire

import (
	"bytes"
	"testing"
)

var benchMetadata = Metadata{{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}

func BenchmarkAppendRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		md   Metadata
	}{{"plain", nil}, {"metadata", benchMetadata}} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			body := make([]byte, 64)
			b.ReportAllocs()
			b.SetBytes(int64(len(AppendRequest(nil, 1, false, 100, "echo", bc.md, body))))
			for i := 0; b.Loop(); i++ {
				buf = AppendRequest(buf[:0], uint64(i+1), false, 100, "echo", bc.md, body)
			}
		})
	}
}

func BenchmarkAppendResponse(b *testing.B) {
	buf := make([]byte, 0, 256)
	body := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendResponse(nil, 1, false, nil, body))))
	for i := 0; b.Loop(); i++ {
		buf = AppendResponse(buf[:0], uint64(i+1), false, nil, body)
	}
}

// BenchmarkAppendData appends full-size DATA chunks of the default
// MAX_FRAME_SIZE, as a sender of a large body does.
func BenchmarkAppendData(b *testing.B) {
	chunk := make([]byte, DefaultMaxFrameSize)
	buf := make([]byte, 0, HeaderLen+len(chunk))
	b.ReportAllocs()
	b.SetBytes(int64(HeaderLen + len(chunk)))
	for i := 0; b.Loop(); i++ {
		buf = AppendData(buf[:0], 1, true, chunk)
	}
}

// BenchmarkDecodeNext decodes a REQUEST with a 64-byte body and parses its
// payload, as a server's read loop does; with metadata, it also reads the
// traceparent entry.
func BenchmarkDecodeNext(b *testing.B) {
	for _, bc := range []struct {
		name string
		md   Metadata
	}{{"plain", nil}, {"metadata", benchMetadata}} {
		b.Run(bc.name, func(b *testing.B) {
			frame := AppendRequest(nil, 1, false, 100, "echo", bc.md, make([]byte, 64))
			var d Decoder
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				f, n, err := d.Next(frame)
				if err != nil || n != len(frame) {
					b.Fatal(n, err)
				}
				_, _, md, _, err := ParseRequest(f.Flags, f.Payload)
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := md.Get("traceparent"); ok != (bc.md != nil) {
					b.Fatal("traceparent")
				}
			}
		})
	}
}

// BenchmarkFramerRoundTrip writes a REQUEST and its RESPONSE (64-byte bodies)
// through a Framer and reads both back.
func BenchmarkFramerRoundTrip(b *testing.B) {
	var buf bytes.Buffer
	fr := NewFramer(&buf, &buf)
	body := make([]byte, 64)
	b.ReportAllocs()
	for i := uint64(1); b.Loop(); i++ {
		if err := fr.WriteRequest(i, false, 100, "echo", nil, body); err != nil {
			b.Fatal(err)
		}
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
		if err := fr.WriteResponse(i, false, nil, body); err != nil {
			b.Fatal(err)
		}
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}
