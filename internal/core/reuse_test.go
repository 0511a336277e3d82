package core

import (
	"bytes"
	"testing"
)

// TestFramesBorrowKeepsOrder checks that a queue that outgrows its small
// buffer, moves to a borrowed one and outgrows that too keeps every
// frame, in order, and that an emptied queue has given back what it
// borrowed and keeps no buffer larger than keepCap.
func TestFramesBorrowKeepsOrder(t *testing.T) {
	for _, frames200 := range []int{20, 200, 400} {
		var q frames
		var want []byte
		for i := range frames200 {
			f := bytes.Repeat([]byte{byte(i)}, 1+i%37)
			want = append(want, f...)
			if n := q.add(func(b []byte) []byte { return append(b, f...) }); n != len(f) {
				t.Fatalf("add returned %d, want %d", n, len(f))
			}
		}
		if !bytes.Equal(q.rest(), want) {
			t.Fatalf("%d frames: the queue's bytes differ from the frames added", frames200)
		}
		q.took(100)
		if !bytes.Equal(q.rest(), want[100:]) {
			t.Fatal("took(100) did not hand out the first 100 bytes")
		}
		q.took(q.len())
		if q.len() != 0 || cap(q.buf) > keepCap || q.lent != nil {
			t.Fatalf("emptied queue: len %d cap %d lent %v, want 0, at most %d, none", q.len(), cap(q.buf), q.lent != nil, keepCap)
		}
	}
}

// TestFramesBorrowWithBytesHandedOut checks the borrow of a queue part
// of whose bytes are handed out already: the rest stays, in order.
func TestFramesBorrowWithBytesHandedOut(t *testing.T) {
	var q frames
	var want []byte
	add := func(i int) {
		f := bytes.Repeat([]byte{byte(i)}, 30)
		want = append(want, f...)
		q.add(func(b []byte) []byte { return append(b, f...) })
	}
	for i := range 5 {
		add(i)
	}
	q.took(40)
	for i := 5; i < 300; i++ {
		add(i)
	}
	if q.lent == nil {
		t.Fatal("the queue did not borrow a buffer")
	}
	if !bytes.Equal(q.rest(), want[40:]) {
		t.Fatal("the bytes not handed out differ from the frames added")
	}
	q.took(q.len())
	if q.lent != nil || cap(q.buf) > keepCap {
		t.Fatalf("emptied queue: lent %v, cap %d", q.lent != nil, cap(q.buf))
	}
}

// TestReqTableReusedAcrossBursts checks that a table emptied by a burst's
// end serves the next burst, and that its requests are found by id
// whether inline or in the map.
func TestReqTableReusedAcrossBursts(t *testing.T) {
	var tb reqTable
	for burst := range 3 {
		base := uint64(burst * 100)
		var rs []*request
		for i := range uint64(40) {
			rs = append(rs, tb.add(base+i+1, reqHandling))
		}
		if tb.len() != 40 {
			t.Fatalf("burst %d: len %d, want 40", burst, tb.len())
		}
		for i, r := range rs {
			if got := tb.get(base + uint64(i) + 1); got != r {
				t.Fatalf("burst %d: get(%d) = %p, want %p", burst, base+uint64(i)+1, got, r)
			}
		}
		for _, r := range rs {
			tb.remove(r)
		}
		if tb.len() != 0 || tb.get(base+1) != nil {
			t.Fatalf("burst %d: the table is not empty after every request was removed", burst)
		}
		if burst > 0 && tb.more == nil {
			t.Fatalf("burst %d: the table was dropped between bursts", burst)
		}
	}
}

// TestBigReqTableNotKept checks that a busy state goes back to the pool
// without a request table grown past maxKeptReqs, and with a smaller one.
func TestBigReqTableNotKept(t *testing.T) {
	for _, n := range []int{maxKeptReqs, maxKeptReqs + 2} {
		c := &Conn{}
		b := c.work()
		for i := range uint64(n) {
			b.reqs.add(i+1, reqHandling)
		}
		for i := range uint64(n) {
			b.reqs.remove(b.reqs.get(i + 1))
		}
		more := b.reqs.more
		c.rest()
		if c.b != nil {
			t.Fatalf("%d requests: the busy state was not given back", n)
		}
		kept := b.reqs.more == more
		if want := n-1 <= maxKeptReqs; kept != want {
			t.Errorf("%d requests (%d in the table): table kept %v, want %v", n, n-1, kept, want)
		}
	}
}
