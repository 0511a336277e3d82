package server

import "sync/atomic"

// budget is the memory the server's connections share (Config.MemoryBudget):
// the core.Budget of every connection.
type budget struct {
	limit int64
	used  atomic.Int64
}

// Reserve takes n bytes if they fit, or always with force (answers).
func (b *budget) Reserve(n int, force bool) bool {
	if force {
		b.used.Add(int64(n))
		return true
	}
	for {
		cur := b.used.Load()
		if cur+int64(n) > b.limit {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+int64(n)) {
			return true
		}
	}
}

// Release gives n bytes back.
func (b *budget) Release(n int) { b.used.Add(-int64(n)) }

// Used is the bytes held now.
func (b *budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}
