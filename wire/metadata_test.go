package wire

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// badMetadataCases are metadata that Validate refuses, with a piece of the
// error's text naming the key or the limit at fault.
var badMetadataCases = []struct {
	name string
	md   Metadata
	want string
}{
	{"65-entries", func() (m Metadata) {
		for i := range MaxMetadataEntries + 1 {
			m = append(m, Field{"k" + strconv.Itoa(i), ""})
		}
		return m
	}(), "65 entries, maximum 64"},
	{"8193-bytes", append(slices.Clone(maxMD[:63]), Field{"k63", strings.Repeat("v", 123)}), "8193 bytes of encoded entries, maximum 8192"},
	{"value-8189", Metadata{{"k", strings.Repeat("v", MaxMetadataLen-3)}}, "8193 bytes of encoded entries, maximum 8192"},
	{"value-65536", Metadata{{"big", strings.Repeat("v", 1<<16)}}, `value of key "big" is 65536 bytes, maximum 65535`},
	{"empty-key", Metadata{{"a", "1"}, {"", "v"}}, `key "": empty key`},
	{"key-256", Metadata{{strings.Repeat("k", 256), "v"}}, "is 256 bytes long, maximum 255"},
	{"uppercase-key", Metadata{{"Trace", "v"}}, `key "Trace": byte 0x54 at offset 0`},
	{"space-in-key", Metadata{{"a b", "v"}}, `key "a b": byte 0x20 at offset 1`},
	{"slash-in-key", Metadata{{"a/b", "v"}}, `key "a/b": byte 0x2f at offset 1`},
	{"non-ascii-key", Metadata{{"clé", "v"}}, `key "clé": byte 0xc3 at offset 2`},
	{"duplicate-key", Metadata{{"a", "1"}, {"b", "2"}, {"a", "3"}}, `key "a" appears twice`},
	{"reserved-prefix", Metadata{{"tcppro-deadline", "1"}}, `key "tcppro-deadline": keys beginning with "tcppro-" are reserved`},
}

func badMetadata() map[string]Metadata {
	m := make(map[string]Metadata)
	for _, tc := range badMetadataCases {
		m[tc.name] = tc.md
	}
	return m
}

func TestMetadataValidate(t *testing.T) {
	for _, md := range []Metadata{nil, {}, {{"k", "v"}}, testMD, maxMD,
		{{"a-b_c.d-0123456789", "\x00\xff\n"}},         // any value bytes
		{{"k", strings.Repeat("v", MaxMetadataLen-4)}}, // the longest value a block holds
		{{strings.Repeat("k", 255), ""}},
		{{"tcppro", "v"}, {"x-tcppro-y", "v"}},
	} {
		if err := md.Validate(); err != nil {
			t.Errorf("Validate(%.60v) = %v", md, err)
		}
	}
	for _, tc := range badMetadataCases {
		err := tc.md.Validate()
		if !errors.Is(err, ErrInvalidMetadata) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want ErrInvalidMetadata saying %q", tc.name, err, tc.want)
		}
	}
}

func TestMetadataGetAndLen(t *testing.T) {
	if n := (Metadata{}).EncodedLen(); n != 0 {
		t.Errorf("empty EncodedLen = %d", n)
	}
	if n := (Metadata{{"k", "v"}}).EncodedLen(); n != 7 { // the example of §14
		t.Errorf("EncodedLen = %d, want 7", n)
	}
	if n := maxMD.EncodedLen(); n != 2+MaxMetadataLen {
		t.Errorf("maxMD.EncodedLen = %d, want %d", n, 2+MaxMetadataLen)
	}
	if v, ok := testMD.Get("user"); !ok || v != "ann" {
		t.Errorf("Get(user) = %q, %v", v, ok)
	}
	if v, ok := testMD.Get("empty"); !ok || v != "" {
		t.Errorf("Get(empty) = %q, %v", v, ok)
	}
	if _, ok := testMD.Get("nope"); ok {
		t.Error("Get(nope) found")
	}
	if _, ok := Metadata(nil).Get(""); ok {
		t.Error("Get on nil found")
	}
}

func TestRawMetadata(t *testing.T) {
	for _, md := range []Metadata{{{"k", "v"}}, testMD, maxMD} {
		b := AppendResponse(nil, 1, false, md, []byte("body"))
		raw, body, err := ParseResponse(b[5], b[HeaderLen:])
		if err != nil || string(body) != "body" {
			t.Fatalf("ParseResponse: %q, %v", body, err)
		}
		if raw.Len() != len(md) {
			t.Errorf("Len = %d, want %d", raw.Len(), len(md))
		}
		var got Metadata
		for k, v := range raw.All() {
			got = append(got, Field{string(k), string(v)})
		}
		if !slices.Equal(got, md) {
			t.Errorf("All yields %v, want %v", got, md)
		}
		if copied := raw.Metadata(); !slices.Equal(copied, md) {
			t.Errorf("Metadata = %v, want %v", copied, md)
		}
		for _, f := range md {
			if v, ok := raw.Get(f.Key); !ok || string(v) != f.Value {
				t.Errorf("Get(%q) = %q, %v", f.Key, v, ok)
			}
		}
		if _, ok := raw.Get("absent"); ok {
			t.Error("Get(absent) found")
		}
		// Stopping early.
		n := 0
		for range raw.All() {
			n++
			break
		}
		if n != 1 {
			t.Errorf("break after %d entries", n)
		}
	}
	// The copy survives the buffer's reuse.
	b := AppendRequest(nil, 1, false, 0, "m", testMD, nil)
	_, _, raw, _, _ := ParseRequest(b[5], b[HeaderLen:])
	copied := raw.Metadata()
	clear(b)
	if !slices.Equal(copied, testMD) {
		t.Errorf("Metadata after the buffer was cleared: %v", copied)
	}
	// Empty blocks.
	for _, raw := range []RawMetadata{nil, {}} {
		if raw.Len() != 0 || raw.Metadata() != nil {
			t.Errorf("empty: Len %d, Metadata %v", raw.Len(), raw.Metadata())
		}
		for range raw.All() {
			t.Error("All yields on an empty block")
		}
	}
	// A malformed RawMetadata (not from a parser) ends the iteration
	// rather than panicking.
	bad := RawMetadata{1, 'k', 0, 5, 'v'}
	if bad.Len() != 0 || bad.Metadata() != nil {
		t.Errorf("malformed: Len %d", bad.Len())
	}
	if _, ok := bad.Get("k"); ok {
		t.Error("malformed: Get found")
	}
}

// Every bad metadata block is refused where it can appear, with a reason
// naming what is wrong.
func TestBadMetadataBlocks(t *testing.T) {
	want := map[string]string{
		"md-length-field-cut": "length field overruns",
		"md-past-payload":     "overruns the payload",
		"md-too-long":         "8193 bytes, maximum 8192",
		"md-entry-past-L":     "runs past the block",
		"md-value-len-cut":    "runs past the block",
		"md-key-past-L":       "runs past the block",
		"md-65-entries":       "more than 64 entries",
		"md-empty-key":        "empty key",
		"md-uppercase-key":    "byte 0x54 at offset 0",
		"md-space-in-key":     "byte 0x20 at offset 1",
		"md-nul-in-key":       "byte 0x00 at offset 1",
		"md-high-byte-key":    "byte 0xc3 at offset 0",
		"md-duplicate-key":    `entry 2 repeats key "a"`,
	}
	for name, blk := range badBlocks() {
		_, _, err := ParseResponse(FlagMetadata, blk)
		wantProtocolError(t, name, err)
		if err == nil || !strings.Contains(err.Error(), want[name]) {
			t.Errorf("%s: %v, want it to say %q", name, err, want[name])
		}
	}
	if len(want) != len(badBlocks()) {
		t.Error("a bad block has no expected error")
	}
}

// Duplicate keys are found whatever their position, hash collisions aside.
func TestDuplicateKeys(t *testing.T) {
	for i := range MaxMetadataEntries {
		for j := range i {
			var entries [][]byte
			for k := range MaxMetadataEntries {
				key := "key-" + strconv.Itoa(k)
				if k == i {
					key = "key-" + strconv.Itoa(j)
				}
				entries = append(entries, entry(key, ""))
			}
			if err := checkEntries(block(entries...)[2:]); err == nil || !strings.Contains(err.Error(), "repeats") {
				t.Fatalf("entries %d and %d equal: %v", j, i, err)
			}
		}
	}
}
