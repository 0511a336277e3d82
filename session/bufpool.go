package session

import "sync"

// Buffers are pooled so that idle connections hold none: a connection
// borrows one while bytes are moving and returns it when it goes quiet.
// A buffer that grew beyond maxPooled (one large frame) is dropped rather
// than pinned in the pool.
const maxPooled = 256 << 10

// buffer is a pooled byte slice; pooling the holder keeps Put free of
// allocations. n and err carry the result of the system call in progress on
// it (read or write callbacks cannot return values), so that the connection
// does not need fields of its own for them.
type buffer struct {
	b   []byte
	n   int
	err error
	inl inlineRequest // a request read into b, for the goroutine serving it
}

var pools sync.Map // size → *sync.Pool of *buffer

// bufPool hands out buffers of one size class.
type bufPool struct {
	size int
	p    *sync.Pool
}

func newBufPool(size int) bufPool {
	p, ok := pools.Load(size)
	if !ok {
		p, _ = pools.LoadOrStore(size, &sync.Pool{New: func() any {
			return &buffer{b: make([]byte, 0, size)}
		}})
	}
	return bufPool{size: size, p: p.(*sync.Pool)}
}

// get returns an empty buffer with capacity of at least size.
func (bp bufPool) get() *buffer {
	return bp.p.Get().(*buffer)
}

// put returns b to the pool, unless it grew too large to keep.
func (bp bufPool) put(b *buffer) {
	if b == nil || cap(b.b) > maxPooled || cap(b.b) < bp.size {
		return
	}
	b.b, b.n, b.err = b.b[:0], 0, nil
	bp.p.Put(b)
}
