package sysinfo

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestPortRange(t *testing.T) {
	r := PortRange{32768, 60999}
	if r.Width() != 28232 {
		t.Errorf("Width = %d, want 28232", r.Width())
	}
	for port, want := range map[int]bool{32767: false, 32768: true, 40000: true, 60999: true, 61000: false} {
		if got := r.Contains(port); got != want {
			t.Errorf("Contains(%d) = %v, want %v", port, got, want)
		}
	}
	if (PortRange{10, 9}).Width() != 0 {
		t.Error("inverted range has non-zero width")
	}
	if got := (PortRange{9000, 9000}).String(); got != "9000" {
		t.Errorf("String = %q", got)
	}
}

func TestParsePortSet(t *testing.T) {
	s, err := ParsePortSet("8000-8010,9000\n")
	if err != nil {
		t.Fatal(err)
	}
	for port, want := range map[int]bool{7999: false, 8000: true, 8010: true, 8011: false, 9000: true, 9001: false} {
		if got := s.Contains(port); got != want {
			t.Errorf("Contains(%d) = %v, want %v", port, got, want)
		}
	}
	if s.String() != "8000-8010,9000" {
		t.Errorf("String = %q", s.String())
	}
	empty, err := ParsePortSet(" \n")
	if err != nil || len(empty) != 0 || empty.Contains(0) {
		t.Errorf("empty: %v %v", empty, err)
	}
	for _, bad := range []string{"x", "10-5", "70000", "1-", "1,,2", "-3"} {
		if _, err := ParsePortSet(bad); err == nil {
			t.Errorf("ParsePortSet(%q) accepted", bad)
		}
	}
}

func TestPortSetAdd(t *testing.T) {
	s := PortSet{{8000, 8010}, {9000, 9000}}
	got := s.Add(8011, 8999, 40000, 8005).String()
	if got != "8000-8011,8999-9000,40000" {
		t.Errorf("Add = %q", got)
	}
	if s.String() != "8000-8010,9000" {
		t.Errorf("Add modified receiver: %q", s.String())
	}
}

func TestLocalPortRangeAndReserved(t *testing.T) {
	f := FS{Root: "testdata/host"}
	r, err := f.LocalPortRange()
	if err != nil {
		t.Fatal(err)
	}
	if r != (PortRange{32768, 60999}) {
		t.Errorf("LocalPortRange = %v", r)
	}
	res, err := f.ReservedPorts()
	if err != nil {
		t.Fatal(err)
	}
	if res.String() != "8000-8010,9000" {
		t.Errorf("ReservedPorts = %q", res.String())
	}

	res, err = FS{Root: "testdata/minimal"}.ReservedPorts()
	if err != nil || len(res) != 0 {
		t.Errorf("empty reserved file: %v, %v", res, err)
	}
}

func TestPortsMissingAndMalformed(t *testing.T) {
	_, err := FS{Root: "testdata/nonexistent"}.LocalPortRange()
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "ip_local_port_range") {
		t.Errorf("missing: %v", err)
	}
	_, err = FS{Root: "testdata/nonexistent"}.ReservedPorts()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing reserved: %v", err)
	}
	bad := FS{Root: "testdata/malformed"}
	_, err = bad.LocalPortRange()
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "ip_local_port_range") || !strings.Contains(err.Error(), "32768 abc") {
		t.Errorf("malformed range: %v", err)
	}
	_, err = bad.ReservedPorts()
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "ip_local_reserved_ports") || !strings.Contains(err.Error(), "9000-8000") {
		t.Errorf("malformed reserved: %v", err)
	}
}

func TestHost(t *testing.T) {
	if !Host().IsHost() || !(FS{}).IsHost() || (FS{Root: "testdata/host"}).IsHost() {
		t.Error("IsHost wrong")
	}
	if _, err := Host().LocalPortRange(); err != nil {
		t.Skipf("no live /proc: %v", err)
	}
}
