package client

// pendingCalls holds a connection's calls awaiting an answer, by request
// id. A connection usually carries one call at a time, so the first is
// kept in fields of its own and the map is only made for a second: the
// common call then touches no hash table. The owner serialises access.
type pendingCalls struct {
	id   uint64 // one's request id
	one  *call
	more map[uint64]*call // made on first use and kept
}

func (p *pendingCalls) len() int {
	n := len(p.more)
	if p.one != nil {
		n++
	}
	return n
}

func (p *pendingCalls) add(id uint64, cl *call) {
	if p.one == nil {
		p.id, p.one = id, cl
		return
	}
	if p.more == nil {
		p.more = make(map[uint64]*call)
	}
	p.more[id] = cl
}

func (p *pendingCalls) get(id uint64) *call {
	if p.one != nil && p.id == id {
		return p.one
	}
	return p.more[id]
}

// remove removes and returns the call with this id, or nil.
func (p *pendingCalls) remove(id uint64) *call {
	if p.one != nil && p.id == id {
		cl := p.one
		p.id, p.one = 0, nil
		return cl
	}
	cl, ok := p.more[id]
	if ok {
		delete(p.more, id)
	}
	return cl
}

// each calls f for every call, in no particular order, and removes those
// for which f returns true.
func (p *pendingCalls) each(f func(id uint64, cl *call) (remove bool)) {
	if p.one != nil && f(p.id, p.one) {
		p.id, p.one = 0, nil
	}
	for id, cl := range p.more {
		if f(id, cl) {
			delete(p.more, id)
		}
	}
}
