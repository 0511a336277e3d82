package client

import (
	"slices"
	"testing"
)

// TestPendingCalls: the first call sits in the fast slot, later ones in
// the map, and every operation finds a call wherever it is kept.
func TestPendingCalls(t *testing.T) {
	var p pendingCalls
	calls := []*call{{}, {}, {}, {}}
	for i, cl := range calls {
		p.add(uint64(i+1), cl)
	}
	if p.len() != 4 || p.one != calls[0] || len(p.more) != 3 {
		t.Fatalf("len %d, one %p, map %d; want 4, the first call, 3", p.len(), p.one, len(p.more))
	}
	for i, cl := range calls {
		if got := p.get(uint64(i + 1)); got != cl {
			t.Fatalf("get(%d) = %p, want %p", i+1, got, cl)
		}
	}
	if p.get(9) != nil || p.remove(9) != nil {
		t.Fatal("an unknown id was found")
	}
	if got := p.remove(1); got != calls[0] || p.one != nil || p.len() != 3 {
		t.Fatalf("remove(1) = %p, one %p, len %d", got, p.one, p.len())
	}
	p.add(7, calls[0]) // the fast slot is free again
	if p.one != calls[0] || p.get(7) != calls[0] {
		t.Fatal("a call added after the fast slot emptied is not in it")
	}
	if got := p.remove(3); got != calls[2] || p.get(3) != nil || p.len() != 3 {
		t.Fatalf("remove(3) = %p, len %d", got, p.len())
	}

	var seen []uint64
	p.each(func(id uint64, cl *call) bool {
		seen = append(seen, id)
		return id != 2 // keep only 2
	})
	slices.Sort(seen)
	if !slices.Equal(seen, []uint64{2, 4, 7}) {
		t.Fatalf("each saw %v, want [2 4 7]", seen)
	}
	if p.len() != 1 || p.get(2) != calls[1] || p.get(7) != nil || p.get(4) != nil {
		t.Fatalf("after each: len %d, want only id 2 left", p.len())
	}
}
