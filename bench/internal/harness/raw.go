package harness

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// msgSize is the size of every request and echo payload. On the raw side the
// last byte is the '\n' delimiter; on the tcppro side the same 64 bytes are
// the request body.
const msgSize = 64

const hexDigits = "0123456789abcdef"

// fillMsg writes the message for (conn, seq) into b[:msgSize]: conn id and
// sequence number in hex, a filler that depends on both, and '\n'. Every
// message differs, so an echo of the wrong message is caught.
func fillMsg(b []byte, conn int, seq uint64) {
	_ = b[msgSize-1]
	c := uint64(conn)
	for i := 7; i >= 0; i-- {
		b[i] = hexDigits[c&15]
		c >>= 4
	}
	b[8] = ' '
	s := seq
	for i := 24; i >= 9; i-- {
		b[i] = hexDigits[s&15]
		s >>= 4
	}
	b[25] = ' '
	x := byte(uint64(conn)*7 + seq)
	for i := 26; i < msgSize-1; i++ {
		b[i] = 'a' + (x+byte(i))%26
	}
	b[msgSize-1] = '\n'
}

// ---- raw server: the typical hand-written std-net echo server ----

// startRawServer serves ln with one goroutine per connection that reads
// newline-delimited messages through a bufio.Reader and writes each one back
// (no deadlines). With bufWrite, echoes go through a bufio.Writer flushed
// whenever no further input is buffered (the coalescing variant).
func startRawServer(ln net.Listener, bufWrite bool) (stop func()) {
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var delay time.Duration
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// EMFILE and friends: back off instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			delay = 0
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				if bufWrite {
					rawEchoBuffered(c)
				} else {
					rawEcho(c)
				}
			}()
		}
	}()
	return func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

func rawEcho(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}

func rawEchoBuffered(c net.Conn) {
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		if _, err := w.Write(line); err != nil {
			return
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// ---- raw load generator ----

type rawLoad struct {
	conns    []net.Conn
	inflight int
	base
	latRecorder // with several in flight: one histogram per connection
}

func newRawLoad(addr string, conns, inflight int, conf *tls.Config) (*rawLoad, error) {
	l := &rawLoad{inflight: inflight}
	l.init(conns)
	if inflight > 1 {
		l.initLat(conns)
	}
	l.conns = make([]net.Conn, conns)
	for i := range l.conns {
		c, err := dialRaw(addr, conf)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("raw dial %d: %w", i, err)
		}
		l.conns[i] = c
	}
	return l, nil
}

func (l *rawLoad) start(hardDeadline time.Time, maxPerConn uint64) {
	for i, c := range l.conns {
		_ = c.SetDeadline(hardDeadline)
		ctr := &l.counters[i]
		if l.inflight <= 1 {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.fail(rawOneAtATime(c, i, ctr, maxPerConn, &l.stopped))
			}()
			continue
		}
		l.wg.Add(2)
		slots := make(chan struct{}, l.inflight)
		// sent[seq%inflight] is when message seq was written; the slot
		// it holds is not reused before the reader has read it.
		sent := make([]atomic.Int64, l.inflight)
		go func() {
			defer l.wg.Done()
			l.fail(rawPipeWriter(c, i, slots, sent, l.win, l.done, maxPerConn))
		}()
		go func() {
			defer l.wg.Done()
			l.fail(rawPipeReader(c, i, slots, sent, l.win, l.hists[i], l.inflight, ctr, maxPerConn))
		}()
	}
}

func (l *rawLoad) stop() {
	l.stopOnce.Do(func() {
		l.stopped.Store(true)
		close(l.done)
		for _, c := range l.conns {
			if c != nil {
				_ = c.SetDeadline(time.Now())
			}
		}
	})
	l.wg.Wait()
}

func (l *rawLoad) close() {
	for _, c := range l.conns {
		if c != nil {
			c.Close()
		}
	}
}

func rawOneAtATime(c net.Conn, id int, ctr *counter, max uint64, stopped *atomic.Bool) error {
	var w, r [msgSize]byte
	for seq := uint64(0); seq < max; seq++ {
		if stopped.Load() {
			return nil
		}
		fillMsg(w[:], id, seq)
		if _, err := c.Write(w[:]); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, r[:]); err != nil {
			return err
		}
		if r != w {
			return fmt.Errorf("conn %d seq %d: echo mismatch: %q", id, seq, r[:])
		}
		ctr.n.Add(1)
	}
	return nil
}

// rawPipeWriter keeps up to cap(slots) messages in flight. It takes every
// free slot at once and writes the messages in one Write, the way a
// pipelining client coalesces (so the raw side is not handicapped by one
// syscall per message on the shared CPU). Just before each Write it stamps
// every message of it in sent.
func rawPipeWriter(c net.Conn, id int, slots chan struct{}, sent []atomic.Int64, win *latWindow, done <-chan struct{}, max uint64) error {
	buf := make([]byte, 0, cap(slots)*msgSize)
	var seq uint64
	for seq < max {
		select {
		case slots <- struct{}{}:
		case <-done:
			return nil
		}
		k := 1
	more:
		for k < cap(slots) && seq+uint64(k) < max {
			select {
			case slots <- struct{}{}:
				k++
			default:
				break more
			}
		}
		buf = buf[:k*msgSize]
		first := seq
		for j := range k {
			fillMsg(buf[j*msgSize:], id, seq)
			seq++
		}
		now := win.now()
		for s := first; s < seq; s++ {
			sent[s%uint64(len(sent))].Store(now)
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// rawPipeReader reads and checks the echoes in order, and records the
// latency of those whose message was written in the window.
func rawPipeReader(c net.Conn, id int, slots chan struct{}, sent []atomic.Int64, win *latWindow, hist *latHist, inflight int, ctr *counter, max uint64) error {
	br := bufio.NewReaderSize(c, inflight*msgSize)
	var got, want [msgSize]byte
	for seq := uint64(0); seq < max; seq++ {
		if _, err := io.ReadFull(br, got[:]); err != nil {
			return err
		}
		fillMsg(want[:], id, seq)
		if got != want {
			return fmt.Errorf("conn %d seq %d: echo mismatch: %q", id, seq, got[:])
		}
		if start := sent[seq%uint64(len(sent))].Load(); win.in(start) {
			hist.add(win.now() - start)
		}
		ctr.n.Add(1)
		<-slots
	}
	return nil
}

// ---- raw holder (memory scenario) ----

type rawHolder struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (h *rawHolder) add(c net.Conn, i int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.conns) <= i {
		h.conns = append(h.conns, nil)
	}
	h.conns[i] = c
	return nil
}

func (h *rawHolder) requestAll() (ok, failed int, first string) {
	var mu sync.Mutex
	forEachLimited(len(h.conns), 128, func(i int) {
		c := h.conns[i]
		var w, r [msgSize]byte
		fillMsg(w[:], i, 0)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write(w[:])
		if err == nil {
			_, err = io.ReadFull(c, r[:])
		}
		if err == nil && !bytes.Equal(r[:], w[:]) {
			err = fmt.Errorf("echo mismatch")
		}
		_ = c.SetDeadline(time.Time{})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			if first == "" {
				first = err.Error()
			}
			return
		}
		ok++
	})
	return ok, failed, first
}

// alive probes every connection with a non-blocking read: a closed one
// reports EOF. The raw server never writes unprompted, so nothing is consumed.
func (h *rawHolder) alive() int {
	n := 0
	var b [1]byte
	for _, c := range h.conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		_, err := c.Read(b[:])
		_ = c.SetReadDeadline(time.Time{})
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			n++
		}
	}
	return n
}
