package wire_test

import (
	"encoding/hex"
	"fmt"

	"github.com/tcppro/tcppro/wire"
)

// The worked example of docs/protocol.md §14: a REQUEST and its RESPONSE,
// then the same REQUEST with metadata.
func ExampleAppendRequest() {
	req := wire.AppendRequest(nil, 1, false, 1000, "echo", nil, []byte("hi"))
	resp := wire.AppendResponse(nil, 1, false, nil, []byte("hi"))
	withMD := wire.AppendRequest(nil, 1, false, 1000, "echo", wire.Metadata{{Key: "k", Value: "v"}}, []byte("hi"))
	fmt.Println(hex.EncodeToString(req[:wire.HeaderLen]), hex.EncodeToString(req[wire.HeaderLen:]))
	fmt.Println(hex.EncodeToString(resp[:wire.HeaderLen]), hex.EncodeToString(resp[wire.HeaderLen:]))
	fmt.Println(hex.EncodeToString(withMD[:wire.HeaderLen]), hex.EncodeToString(withMD[wire.HeaderLen:]))
	// Output:
	// 0000000b010000000000000000000001 000003e8046563686f6869
	// 00000002020000000000000000000001 6869
	// 00000012010200000000000000000001 000003e8046563686f0005016b0001766869
}

// A body larger than the peer's MAX_FRAME_SIZE goes as a REQUEST flagged
// MORE and DATA frames, each filling a frame.
func ExampleRequestOverhead() {
	body := make([]byte, 100000)
	peerMax := wire.DefaultMaxFrameSize // from the server's HELLO
	first := min(len(body), peerMax-wire.RequestOverhead("echo", nil))
	out := wire.AppendRequest(nil, 1, first < len(body), 0, "echo", nil, body[:first])
	for rest := body[first:]; len(rest) > 0; {
		n := min(len(rest), peerMax)
		out = wire.AppendData(out, 1, n < len(rest), rest[:n])
		rest = rest[n:]
	}

	var d wire.Decoder
	for len(out) > 0 {
		f, n, _ := d.Next(out)
		fmt.Println(f.Header)
		out = out[n:]
	}
	// Output:
	// REQUEST id=1 len=65536 flags=0x1
	// DATA id=1 len=34473
}

// A read loop over a buffer that fills up in pieces, as a connection's
// reader sees it.
func ExampleDecoder_Next() {
	stream := wire.AppendHello(nil, wire.DefaultHello())
	stream = wire.AppendRequest(stream, 1, false, 0, "echo", wire.Metadata{{Key: "user", Value: "ann"}}, []byte("hi"))
	stream = wire.AppendPing(stream, 7)

	var d wire.Decoder
	var buf []byte
	for _, chunk := range [][]byte{stream[:10], stream[10:70], stream[70:]} {
		buf = append(buf, chunk...) // bytes read from the connection
		for {
			f, n, err := d.Next(buf)
			if err != nil {
				fmt.Println("close the connection:", err)
				return
			}
			if n == 0 {
				break // need more bytes: wire.FrameLen(buf) in all
			}
			switch f.Type {
			case wire.TypeHello:
				h, _ := wire.ParseHello(f.Payload)
				fmt.Printf("%v version %d, max frame %d\n", f.Header, h.Version, h.MaxFrameSize)
			case wire.TypeRequest:
				_, method, md, body, _ := wire.ParseRequest(f.Flags, f.Payload)
				user, _ := md.Get("user")
				fmt.Printf("%v %s(%s) user=%s\n", f.Header, method, body, user)
			case wire.TypePing:
				v, _ := wire.ParsePing(f.Payload)
				fmt.Printf("%v, answer PONG %d\n", f.Header, v)
			default:
				if !f.Type.Extension() {
					fmt.Println("unexpected", f.Header)
				}
				// Extension types are skipped.
			}
			buf = buf[n:]
		}
	}
	// Output:
	// HELLO id=0 len=44 version 2, max frame 65536
	// REQUEST id=1 len=23 flags=0x2 echo(hi) user=ann
	// PING id=0 len=8, answer PONG 7
}
