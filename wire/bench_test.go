package wire

import (
	"bytes"
	"testing"
)

func BenchmarkAppendRequest(b *testing.B) {
	buf := make([]byte, 0, 256)
	body := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendRequest(nil, 1, 100, "echo", body))))
	for i := 0; b.Loop(); i++ {
		buf = AppendRequest(buf[:0], uint64(i+1), 100, "echo", body)
	}
}

func BenchmarkAppendResponse(b *testing.B) {
	buf := make([]byte, 0, 256)
	body := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendResponse(nil, 1, body))))
	for i := 0; b.Loop(); i++ {
		buf = AppendResponse(buf[:0], uint64(i+1), body)
	}
}

// BenchmarkDecodeNext decodes a REQUEST with a 64-byte body and parses its
// payload, as a server's read loop does.
func BenchmarkDecodeNext(b *testing.B) {
	frame := AppendRequest(nil, 1, 100, "echo", make([]byte, 64))
	var d Decoder
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		f, n, err := d.Next(frame)
		if err != nil || n != len(frame) {
			b.Fatal(n, err)
		}
		if _, _, _, err := ParseRequest(f.Payload); err != nil {
			b.Fatal(err)
		}
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
		if err := fr.WriteRequest(i, 100, "echo", body); err != nil {
			b.Fatal(err)
		}
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
		if err := fr.WriteResponse(i, body); err != nil {
			b.Fatal(err)
		}
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}
