package sysinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Counters are kernel statistics from /proc/net/netstat or /proc/net/snmp,
// by section ("TcpExt", "IpExt", "Tcp", ...) and name ("ListenOverflows").
// They count since boot (or since the network namespace was created).
type Counters map[string]map[string]int64

// Get returns one counter and whether the kernel reports it at all.
func (c Counters) Get(section, name string) (int64, bool) {
	v, ok := c[section][name]
	return v, ok
}

// NetStat reads proc/net/netstat: the TcpExt counters (ListenOverflows,
// ListenDrops, TCPTimeouts, TCPAbortOnTimeout, ...) and the other
// extended sections.
func (f FS) NetStat() (Counters, error) { return f.readCounters("proc/net/netstat") }

// SNMP reads proc/net/snmp: the RFC 1213 counters (Tcp: ActiveOpens,
// RetransSegs, CurrEstab, ...).
func (f FS) SNMP() (Counters, error) { return f.readCounters("proc/net/snmp") }

// readCounters parses the two-line format both files use:
//
//	TcpExt: Name1 Name2 ...
//	TcpExt: 12 34 ...
func (f FS) readCounters(rel string) (Counters, error) {
	b, err := f.readFile(rel)
	if err != nil {
		return nil, err
	}
	out := Counters{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 16<<10), 1<<20)
	for sc.Scan() {
		names := sc.Text()
		if strings.TrimSpace(names) == "" {
			continue
		}
		if !sc.Scan() {
			return nil, f.malformed(rel, names, "header line without a values line")
		}
		values := sc.Text()
		sec, nameList, ok1 := strings.Cut(names, ":")
		sec2, valueList, ok2 := strings.Cut(values, ":")
		if !ok1 || !ok2 || sec != sec2 {
			return nil, f.malformed(rel, names+" / "+values, "want a 'Section: names' line followed by a 'Section: values' line")
		}
		nf, vf := strings.Fields(nameList), strings.Fields(valueList)
		if len(nf) != len(vf) {
			return nil, f.malformed(rel, values, fmt.Sprintf("section %s has %d names but %d values", sec, len(nf), len(vf)))
		}
		m := out[sec]
		if m == nil {
			m = make(map[string]int64, len(nf))
			out[sec] = m
		}
		for i, n := range nf {
			v, err := parseCounter(vf[i])
			if err != nil {
				return nil, f.malformed(rel, vf[i], fmt.Sprintf("%s.%s is not an integer", sec, n))
			}
			m[n] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path(rel), err)
	}
	if len(out) == 0 {
		return nil, f.malformed(rel, "", "no counters")
	}
	return out, nil
}

// parseCounter accepts signed values (Tcp MaxConn is -1) and unsigned ones
// beyond int64, which saturate.
func parseCounter(s string) (int64, error) {
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return v, nil
	}
	if _, err := strconv.ParseUint(s, 10, 64); err != nil {
		return 0, err
	}
	return math.MaxInt64, nil
}

// Uptime reads proc/uptime: how long ago the machine booted, which is how
// far back the counters go.
func (f FS) Uptime() (time.Duration, error) {
	const rel = "proc/uptime"
	b, err := f.readFile(rel)
	if err != nil {
		return 0, err
	}
	fld := strings.Fields(string(b))
	if len(fld) < 1 {
		return 0, f.malformed(rel, string(b), "empty")
	}
	secs, err := strconv.ParseFloat(fld[0], 64)
	if err != nil || secs < 0 {
		return 0, f.malformed(rel, string(b), "first field is not seconds")
	}
	return time.Duration(secs * float64(time.Second)), nil
}
