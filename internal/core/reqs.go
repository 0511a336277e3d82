package core

import (
	"maps"
	"slices"

	"github.com/tcppro/tcppro/wire"
)

// request is a request a server has taken in: its frames still arriving,
// or handed to the Sink and not yet answered.
type request struct {
	id   uint64
	held uint32 // bytes reserved for it: its body, at most MAX_MESSAGE_SIZE
	st   reqState
	asm  *assembly // while receiving
}

// assembly is a request whose frames are still arriving.
type assembly struct {
	at      int64 // when its REQUEST frame arrived
	timeout uint32
	method  []byte
	md      wire.Metadata
	body    []byte
}

type reqState uint8

const (
	reqReceiving reqState = iota + 1 // DATA frames still to come
	reqHandling                      // handed to the Sink; counts in flight
	reqCancelled                     // handed to the Sink, then cancelled: its answer is dropped
)

// reqTable is a server's requests by id. One request at a time is the
// common case: it is held inline, and the others, while more than one is
// in flight, in a table made for them. The table lives as long as the
// busy state that holds it (see busy), emptied between bursts of requests
// rather than made anew for each, so that an idle connection holds
// nothing for its requests and a busy one does not regrow its table.
type reqTable struct {
	one  request // one.st == 0: free
	more *moreReqs
}

// moreReqs are the requests beyond the inline one, and the structs of
// those that ended, kept for the next ones while the table lives.
type moreReqs struct {
	m    map[uint64]*request
	free []*request
	peak int // the most requests m has held (a map does not shrink)
}

// maxFreeReqs bounds the ended requests a table keeps for reuse: enough
// for a burst of 64.
const maxFreeReqs = 64

// maxKeptReqs bounds the tables kept with a pooled busy state: one that
// has held more requests (its map does not shrink) is dropped with the
// burst that grew it.
const maxKeptReqs = 2 * maxFreeReqs

// len is the number of requests held.
func (t *reqTable) len() int {
	n := 0
	if t.one.st != 0 {
		n++
	}
	if t.more != nil {
		n += len(t.more.m)
	}
	return n
}

// get returns the request with id, or nil.
func (t *reqTable) get(id uint64) *request {
	if t.one.st != 0 && t.one.id == id {
		return &t.one
	}
	if t.more != nil {
		return t.more.m[id]
	}
	return nil
}

// add records a new request with id (not held already) in state st.
func (t *reqTable) add(id uint64, st reqState) *request {
	r := &t.one
	if t.one.st != 0 {
		if t.more == nil {
			t.more = &moreReqs{m: make(map[uint64]*request)}
		}
		mr := t.more
		if n := len(mr.free); n > 0 {
			r = mr.free[n-1]
			mr.free[n-1] = nil
			mr.free = mr.free[:n-1]
		} else {
			r = new(request)
		}
		mr.m[id] = r
		mr.peak = max(mr.peak, len(mr.m))
	}
	r.id, r.st = id, st
	return r
}

// remove forgets r.
func (t *reqTable) remove(r *request) {
	if r == &t.one {
		t.one = request{}
		return
	}
	mr := t.more
	delete(mr.m, r.id)
	*r = request{}
	if len(mr.free) < maxFreeReqs {
		mr.free = append(mr.free, r)
	}
}

// ids returns the ids of the requests in increasing order, so that they
// are handled in a reproducible order.
func (t *reqTable) ids() []uint64 {
	var ids []uint64
	if t.more != nil {
		ids = slices.Collect(maps.Keys(t.more.m))
	}
	if t.one.st != 0 {
		ids = append(ids, t.one.id)
	}
	slices.Sort(ids)
	return ids
}
