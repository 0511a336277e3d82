//go:build linux

package evloop

// timerHeap is a loop's timers: a min-heap of connections by the time the
// loop must tick them (Conn.heapAt), each in it at most once, at
// Conn.heapIdx (-1 when not in it). The loop's mutex guards it and both
// fields.
type timerHeap []*Conn

func (h timerHeap) top() *Conn {
	if len(h) == 0 {
		return nil
	}
	return h[0]
}

func (h *timerHeap) push(c *Conn) {
	c.heapIdx = int32(len(*h))
	*h = append(*h, c)
	h.up(len(*h) - 1)
}

func (h *timerHeap) remove(c *Conn) {
	i, last := int(c.heapIdx), len(*h)-1
	if i != last {
		h.swap(i, last)
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	c.heapIdx = -1
	if i != last {
		h.down(i)
		h.up(i)
	}
	if cap(*h) > 64 && len(*h) < cap(*h)/4 {
		*h = append(timerHeap(nil), *h...) // shed a burst's memory
	}
}

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = int32(i)
	h[j].heapIdx = int32(j)
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].heapAt <= h[i].heapAt {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h timerHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].heapAt < h[l].heapAt {
			m = r
		}
		if h[i].heapAt <= h[m].heapAt {
			return
		}
		h.swap(i, m)
		i = m
	}
}
