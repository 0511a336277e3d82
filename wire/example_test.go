package wire_test

import (
	"encoding/hex"
	"fmt"

	"github.com/tcppro/tcppro/wire"
)

// The worked example of docs/protocol.md: a REQUEST and its RESPONSE.
func ExampleAppendRequest() {
	req := wire.AppendRequest(nil, 1, 1000, "echo", []byte("hi"))
	resp := wire.AppendResponse(nil, 1, []byte("hi"))
	fmt.Println(hex.EncodeToString(req[:wire.HeaderLen]), hex.EncodeToString(req[wire.HeaderLen:]))
	fmt.Println(hex.EncodeToString(resp[:wire.HeaderLen]), hex.EncodeToString(resp[wire.HeaderLen:]))
	// Output:
	// 0000000b010000000000000000000001 000003e8046563686f6869
	// 00000002020000000000000000000001 6869
}

// A read loop over a buffer that fills up in pieces, as a connection's
// reader sees it.
func ExampleDecoder_Next() {
	stream := wire.AppendRequest(nil, 1, 0, "echo", []byte("hi"))
	stream = wire.AppendPing(stream, 7)

	var d wire.Decoder
	var buf []byte
	for _, chunk := range [][]byte{stream[:10], stream[10:30], stream[30:]} {
		buf = append(buf, chunk...) // bytes read from the connection
		for {
			f, n, err := d.Next(buf)
			if err != nil {
				fmt.Println("close the connection:", err)
				return
			}
			if n == 0 {
				break // need more bytes
			}
			switch f.Type {
			case wire.TypeRequest:
				_, method, body, _ := wire.ParseRequest(f.Payload)
				fmt.Printf("%v %s(%s)\n", f.Header, method, body)
			case wire.TypePing:
				v, _ := wire.ParsePing(f.Payload)
				fmt.Printf("%v, answer PONG %d\n", f.Header, v)
			}
			buf = buf[n:]
		}
	}
	// Output:
	// REQUEST id=1 len=11 echo(hi)
	// PING id=0 len=8, answer PONG 7
}
