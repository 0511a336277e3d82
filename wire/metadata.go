package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math"
	"strings"
)

// A metadata block (docs/protocol.md §6) sits in a head frame flagged
// METADATA, after the type's fixed fields: a 2-byte length L, then L bytes
// of entries, each a key length K (1 byte), the key (K bytes), a value
// length V (2 bytes) and the value (V bytes).

const (
	// MaxMetadataKeyLen is the longest metadata key, in bytes.
	MaxMetadataKeyLen = 255
	// MaxMetadataValueLen is the longest metadata value, in bytes.
	MaxMetadataValueLen = math.MaxUint16
	// ReservedKeyPrefix begins the metadata keys reserved for the protocol's
	// own later use. Receivers accept such keys; Metadata.Validate refuses
	// them, so that applications do not send them.
	ReservedKeyPrefix = "tcppro-"
)

// ErrInvalidMetadata matches (with errors.Is) the errors of
// Metadata.Validate.
var ErrInvalidMetadata = errors.New("wire: invalid metadata")

// Field is one metadata entry.
type Field struct {
	Key, Value string
}

// Metadata is the key/value pairs of a metadata block, in the order they are
// sent. A nil or empty Metadata means none: no block is sent.
type Metadata []Field

// Get returns the value of key, and whether m holds it.
func (m Metadata) Get(key string) (string, bool) {
	for _, f := range m {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Validate reports whether m can be sent: at most MaxMetadataEntries
// entries and MaxMetadataLen bytes of encoded entries; keys of 1 to
// MaxMetadataKeyLen bytes of lowercase ASCII letters, digits, '-', '_' and
// '.', none beginning with ReservedKeyPrefix, none repeated; values of at
// most MaxMetadataValueLen bytes. The error matches ErrInvalidMetadata and
// names the key or the limit at fault. Empty metadata is valid.
func (m Metadata) Validate() error { return m.check(true) }

// check applies the rules of §6; with reserved it also refuses keys with
// ReservedKeyPrefix, which receivers accept but applications must not send.
func (m Metadata) check(reserved bool) error {
	if len(m) > MaxMetadataEntries {
		return fmt.Errorf("%w: %d entries, maximum %d", ErrInvalidMetadata, len(m), MaxMetadataEntries)
	}
	size := 0
	for i, f := range m {
		if len(f.Key) > MaxMetadataKeyLen {
			return fmt.Errorf("%w: key %q... is %d bytes long, maximum %d", ErrInvalidMetadata, f.Key[:32], len(f.Key), MaxMetadataKeyLen)
		}
		if reason := keyProblem(f.Key); reason != "" {
			return fmt.Errorf("%w: key %q: %s", ErrInvalidMetadata, f.Key, reason)
		}
		if reserved && strings.HasPrefix(f.Key, ReservedKeyPrefix) {
			return fmt.Errorf("%w: key %q: keys beginning with %q are reserved", ErrInvalidMetadata, f.Key, ReservedKeyPrefix)
		}
		if len(f.Value) > MaxMetadataValueLen {
			return fmt.Errorf("%w: value of key %q is %d bytes, maximum %d", ErrInvalidMetadata, f.Key, len(f.Value), MaxMetadataValueLen)
		}
		for _, g := range m[:i] {
			if g.Key == f.Key {
				return fmt.Errorf("%w: key %q appears twice", ErrInvalidMetadata, f.Key)
			}
		}
		size += entryFixedLen + len(f.Key) + len(f.Value)
	}
	if size > MaxMetadataLen {
		return fmt.Errorf("%w: %d bytes of encoded entries, maximum %d", ErrInvalidMetadata, size, MaxMetadataLen)
	}
	return nil
}

// entryFixedLen is the key length byte and the value length of one entry.
const entryFixedLen = 1 + 2

// EncodedLen returns the length in bytes of m's metadata block, its 2-byte
// length field included; 0 for empty metadata, which is not sent.
func (m Metadata) EncodedLen() int {
	if len(m) == 0 {
		return 0
	}
	n := metadataLenLen
	for _, f := range m {
		n += entryFixedLen + len(f.Key) + len(f.Value)
	}
	return n
}

// appendMetadata appends m's block, or nothing for empty metadata. m has
// been checked.
func appendMetadata(dst []byte, m Metadata) []byte {
	if len(m) == 0 {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(m.EncodedLen()-metadataLenLen))
	for _, f := range m {
		dst = append(dst, byte(len(f.Key)))
		dst = append(dst, f.Key...)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(f.Value)))
		dst = append(dst, f.Value...)
	}
	return dst
}

// keyChars marks the bytes allowed in metadata keys.
var keyChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['-'], t['_'], t['.'] = true, true, true
	return t
}()

// keyProblem says what is wrong with a key's bytes, or "" when nothing is.
// The length limit is checked by the callers.
func keyProblem[K string | []byte](key K) string {
	if len(key) == 0 {
		return "empty key"
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !keyChars[c] {
			return fmt.Sprintf("byte 0x%02x at offset %d is not a lowercase ASCII letter, digit, '-', '_' or '.'", c, i)
		}
	}
	return ""
}

// RawMetadata is the entries of a received metadata block (the bytes after
// its length field), as the payload parsers return them: already checked,
// and aliasing the frame's payload. Reading it allocates nothing, except
// Metadata, which copies it.
type RawMetadata []byte

// entryAt decodes the entry at offset i of r: the bounds of its key and
// value. ok is false at the end of r, or where r is malformed (which a
// RawMetadata from a parser never is).
func (r RawMetadata) entryAt(i int) (ks, ke, vs, ve int, ok bool) {
	if i >= len(r) {
		return 0, 0, 0, 0, false
	}
	ks = i + 1
	ke = ks + int(r[i])
	vs = ke + 2
	if vs > len(r) {
		return 0, 0, 0, 0, false
	}
	ve = vs + int(binary.BigEndian.Uint16(r[ke:]))
	if ve > len(r) {
		return 0, 0, 0, 0, false
	}
	return ks, ke, vs, ve, true
}

// Len returns the number of entries.
func (r RawMetadata) Len() int {
	n := 0
	for i := 0; ; n++ {
		_, _, _, ve, ok := r.entryAt(i)
		if !ok {
			return n
		}
		i = ve
	}
}

// All yields each entry's key and value, in block order. They alias r (and
// so the frame's payload), with their capacity cut at their end.
func (r RawMetadata) All() iter.Seq2[[]byte, []byte] {
	return func(yield func(key, value []byte) bool) {
		for i := 0; ; {
			ks, ke, vs, ve, ok := r.entryAt(i)
			if !ok || !yield(r[ks:ke:ke], r[vs:ve:ve]) {
				return
			}
			i = ve
		}
	}
}

// Get returns the value of key, aliasing r, and whether r holds it.
func (r RawMetadata) Get(key string) ([]byte, bool) {
	for i := 0; ; {
		ks, ke, vs, ve, ok := r.entryAt(i)
		if !ok {
			return nil, false
		}
		if string(r[ks:ke]) == key {
			return r[vs:ve:ve], true
		}
		i = ve
	}
}

// Metadata copies the entries into a Metadata, which stays valid once the
// frame's buffer is reused; nil when there are none.
func (r RawMetadata) Metadata() Metadata {
	n := r.Len()
	if n == 0 {
		return nil
	}
	s := string(r) // one copy, which every key and value slices
	m := make(Metadata, 0, n)
	for i := 0; ; {
		ks, ke, vs, ve, ok := r.entryAt(i)
		if !ok {
			return m
		}
		m = append(m, Field{Key: s[ks:ke], Value: s[vs:ve]})
		i = ve
	}
}

// checkEntries checks the entries of a received block: each within the
// block, at most MaxMetadataEntries, valid keys, none repeated. It does not
// allocate unless it fails.
func checkEntries(r []byte) error {
	var (
		hashes [MaxMetadataEntries]uint64 // of the keys seen
		starts [MaxMetadataEntries]uint16 // offsets of their entries
	)
	n := 0
	for i := 0; i < len(r); n++ {
		if n == MaxMetadataEntries {
			return fmt.Errorf("more than %d entries", MaxMetadataEntries)
		}
		ks, ke, _, ve, ok := RawMetadata(r).entryAt(i)
		if !ok {
			return fmt.Errorf("entry %d at offset %d runs past the block's %d bytes", n, i, len(r))
		}
		key := r[ks:ke]
		if reason := keyProblem(key); reason != "" {
			return fmt.Errorf("entry %d: %s", n, reason)
		}
		h := fnv64a(key)
		for j := range n {
			if hashes[j] != h {
				continue
			}
			s := int(starts[j])
			if string(r[s+1:s+1+int(r[s])]) == string(key) {
				return fmt.Errorf("entry %d repeats key %q", n, key)
			}
		}
		hashes[n], starts[n] = h, uint16(i)
		i = ve
	}
	return nil
}

// fnv64a is the 64-bit FNV-1a hash of b.
func fnv64a(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}
