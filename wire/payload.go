package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// The Append functions append one whole frame (header and payload) to dst and
// return the extended slice. They never allocate when dst has enough spare
// capacity. They do not check ids nor sizes against the peer's limits: the
// caller keeps to the rules of docs/protocol.md (ids, MAX_FRAME_SIZE,
// MAX_MESSAGE_SIZE). A frame whose payload does not fit the 32-bit length
// field makes them panic.
//
// The message encoders take a body chunk and a flag more: more sets FlagMore,
// saying that DATA frames of the same message follow. A non-empty md sets
// FlagMetadata and writes the metadata block after the type's fixed fields;
// metadata that breaks the rules of docs/protocol.md §6, which a receiver
// would refuse, makes them panic, as a method name of a length other than 1
// to MaxMethodLen makes AppendRequest panic. Metadata.Validate reports those
// rules (and refuses reserved keys too, which the encoders do send).

// RequestOverhead returns the number of payload bytes of a REQUEST before its
// body: 5 + len(method) + md.EncodedLen(). A body chunk of at most the peer's
// MAX_FRAME_SIZE minus this fits in the REQUEST frame.
func RequestOverhead(method string, md Metadata) int {
	return requestFixedLen + len(method) + md.EncodedLen()
}

// ResponseOverhead returns the number of payload bytes of a RESPONSE before
// its body: md.EncodedLen().
func ResponseOverhead(md Metadata) int { return md.EncodedLen() }

func moreFlag(more bool) uint8 {
	if more {
		return FlagMore
	}
	return 0
}

// metadataFlag returns FlagMetadata when md is not empty, after checking that
// it can be sent; it panics naming fn otherwise.
func metadataFlag(fn string, md Metadata) uint8 {
	if len(md) == 0 {
		return 0
	}
	if err := md.check(false); err != nil {
		panic(fmt.Sprintf("wire: %s: %v (check metadata with Metadata.Validate)", fn, err))
	}
	return FlagMetadata
}

// AppendRequest appends a REQUEST frame: the head of request id, carrying
// the first chunk of its body. id must be at least 1 and greater than every
// id sent before on the connection; timeoutMillis is the caller's remaining
// deadline in milliseconds, 0 for none. method must be 1 to MaxMethodLen
// bytes long, or AppendRequest panics: check names with ValidMethod first.
func AppendRequest(dst []byte, id uint64, more bool, timeoutMillis uint32, method string, md Metadata, chunk []byte) []byte {
	if len(method) == 0 || len(method) > MaxMethodLen {
		panic(fmt.Sprintf("wire: AppendRequest: method name of %d bytes, want 1..%d (check it with ValidMethod)", len(method), MaxMethodLen))
	}
	flags := moreFlag(more) | metadataFlag("AppendRequest", md)
	dst = appendHeader(dst, TypeRequest, flags, id, RequestOverhead(method, md)+len(chunk))
	dst = binary.BigEndian.AppendUint32(dst, timeoutMillis)
	dst = append(dst, byte(len(method)))
	dst = append(dst, method...)
	dst = appendMetadata(dst, md)
	return append(dst, chunk...)
}

// AppendResponse appends a RESPONSE frame: the head of the successful answer
// to request id, carrying the first chunk of its body.
func AppendResponse(dst []byte, id uint64, more bool, md Metadata, chunk []byte) []byte {
	flags := moreFlag(more) | metadataFlag("AppendResponse", md)
	dst = appendHeader(dst, TypeResponse, flags, id, md.EncodedLen()+len(chunk))
	dst = appendMetadata(dst, md)
	return append(dst, chunk...)
}

// AppendData appends a DATA frame carrying the next chunk of the body of
// message id (a request's from a client, an answer's from a server).
func AppendData(dst []byte, id uint64, more bool, chunk []byte) []byte {
	dst = appendHeader(dst, TypeData, moreFlag(more), id, len(chunk))
	return append(dst, chunk...)
}

// AppendError appends an ERROR frame answering request id, or about the whole
// connection when id is 0 (md is then ignored: a connection-level ERROR
// carries no metadata). msg should be UTF-8; it is truncated to
// MaxErrorMessageLen bytes, on a character boundary.
func AppendError(dst []byte, id uint64, code Code, md Metadata, msg string) []byte {
	if id == 0 {
		md = nil
	}
	flags := metadataFlag("AppendError", md)
	msg = truncateMessage(msg)
	dst = appendHeader(dst, TypeError, flags, id, errorFixedLen+md.EncodedLen()+len(msg))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	dst = appendMetadata(dst, md)
	return append(dst, msg...)
}

// AppendPing appends a PING frame carrying data (a sequence number or a
// timestamp: the peer echoes it in its PONG).
func AppendPing(dst []byte, data uint64) []byte {
	dst = appendHeader(dst, TypePing, 0, 0, pingLen)
	return binary.BigEndian.AppendUint64(dst, data)
}

// AppendPong appends a PONG frame; data is the payload of the PING it answers.
func AppendPong(dst []byte, data uint64) []byte {
	dst = appendHeader(dst, TypePong, 0, 0, pingLen)
	return binary.BigEndian.AppendUint64(dst, data)
}

// AppendGoAway appends a GOAWAY frame: the sender will process requests with
// ids up to lastID and no other. msg should be UTF-8; it is truncated to
// MaxErrorMessageLen bytes, on a character boundary.
func AppendGoAway(dst []byte, lastID uint64, reason Reason, msg string) []byte {
	msg = truncateMessage(msg)
	dst = appendHeader(dst, TypeGoAway, 0, 0, goAwayFixedLen+len(msg))
	dst = binary.BigEndian.AppendUint64(dst, lastID)
	dst = binary.BigEndian.AppendUint16(dst, uint16(reason))
	return append(dst, msg...)
}

// AppendCancel appends a CANCEL frame: the client abandons request id.
func AppendCancel(dst []byte, id uint64) []byte {
	return appendHeader(dst, TypeCancel, 0, id, 0)
}

// truncateMessage cuts msg to at most MaxErrorMessageLen bytes, at the start of
// a UTF-8 sequence so that a valid message stays valid.
func truncateMessage(msg string) string {
	if len(msg) <= MaxErrorMessageLen {
		return msg
	}
	n := MaxErrorMessageLen
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n]
}

// The payload parsers decode the payload of one frame type, given the flags
// (and for ERROR the id) of its header. They do not allocate on success; the
// slices they return alias payload, their capacity cut so that an append
// cannot run into the bytes that follow. Their errors are *ProtocolError
// values. A payload that Decoder.Next accepted always parses.

// ParseRequest decodes a REQUEST payload. md is empty unless flags has
// FlagMetadata; body is the first chunk of the request's body.
func ParseRequest(flags uint8, payload []byte) (timeoutMillis uint32, method []byte, md RawMetadata, body []byte, err error) {
	if len(payload) < requestFixedLen+1 {
		return 0, nil, nil, nil, protocolErrorf("REQUEST payload of %d bytes, want at least %d", len(payload), requestFixedLen+1)
	}
	m := requestFixedLen + int(payload[4])
	switch {
	case m == requestFixedLen:
		return 0, nil, nil, nil, protocolErrorf("REQUEST with an empty method name")
	case m > len(payload):
		return 0, nil, nil, nil, protocolErrorf("REQUEST method name of %d bytes overruns a %d-byte payload", payload[4], len(payload))
	}
	body = payload[m:]
	if flags&FlagMetadata != 0 {
		if md, body, err = splitMetadata(TypeRequest, body); err != nil {
			return 0, nil, nil, nil, err
		}
	}
	return binary.BigEndian.Uint32(payload), payload[requestFixedLen:m:m], md, body, nil
}

// ParseResponse decodes a RESPONSE payload. md is empty unless flags has
// FlagMetadata; body is the first chunk of the answer's body.
func ParseResponse(flags uint8, payload []byte) (md RawMetadata, body []byte, err error) {
	if flags&FlagMetadata == 0 {
		return nil, payload, nil
	}
	return splitMetadata(TypeResponse, payload)
}

// ParseError decodes an ERROR payload. The metadata block is read only when
// id ≥ 1 and flags has FlagMetadata (on a connection-level ERROR the flag is
// ignored). The message is not checked: it may be longer than
// MaxErrorMessageLen or not valid UTF-8. Flag MORE is a protocol error.
func ParseError(id uint64, flags uint8, payload []byte) (code Code, md RawMetadata, msg []byte, err error) {
	if len(payload) < errorFixedLen {
		return 0, nil, nil, protocolErrorf("ERROR payload of %d bytes, want at least %d", len(payload), errorFixedLen)
	}
	if flags&FlagMore != 0 {
		return 0, nil, nil, protocolErrorf("ERROR flagged MORE: errors are never chunked")
	}
	msg = payload[errorFixedLen:]
	if id != 0 && flags&FlagMetadata != 0 {
		if md, msg, err = splitMetadata(TypeError, msg); err != nil {
			return 0, nil, nil, err
		}
	}
	return Code(binary.BigEndian.Uint16(payload)), md, msg, nil
}

// ParsePing decodes a PING or PONG payload.
func ParsePing(payload []byte) (uint64, error) {
	if len(payload) != pingLen {
		return 0, protocolErrorf("PING/PONG payload of %d bytes, want %d", len(payload), pingLen)
	}
	return binary.BigEndian.Uint64(payload), nil
}

// ParseGoAway decodes a GOAWAY payload. The message is not checked, as for
// ParseError.
func ParseGoAway(payload []byte) (lastID uint64, reason Reason, msg []byte, err error) {
	if len(payload) < goAwayFixedLen {
		return 0, 0, nil, protocolErrorf("GOAWAY payload of %d bytes, want at least %d", len(payload), goAwayFixedLen)
	}
	return binary.BigEndian.Uint64(payload), Reason(binary.BigEndian.Uint16(payload[8:])), payload[goAwayFixedLen:], nil
}

// splitMetadata splits rest, the part of a head frame's payload after its
// fixed fields, into its metadata block's entries (checked) and what follows
// the block. The frame is flagged METADATA.
func splitMetadata(t Type, rest []byte) (RawMetadata, []byte, error) {
	if len(rest) < metadataLenLen {
		return nil, nil, protocolErrorf("%v metadata block: length field overruns the payload", t)
	}
	l := int(binary.BigEndian.Uint16(rest))
	switch {
	case l > MaxMetadataLen:
		return nil, nil, protocolErrorf("%v metadata block of %d bytes, maximum %d", t, l, MaxMetadataLen)
	case metadataLenLen+l > len(rest):
		return nil, nil, protocolErrorf("%v metadata block of %d bytes overruns the payload by %d bytes", t, l, metadataLenLen+l-len(rest))
	}
	end := metadataLenLen + l
	entries := rest[metadataLenLen:end:end]
	if err := checkEntries(entries); err != nil {
		return nil, nil, protocolErrorf("%v metadata block: %v", t, err)
	}
	return RawMetadata(entries), rest[end:], nil
}
