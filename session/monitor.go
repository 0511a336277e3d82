package session

import (
	"sync"
	"time"
)

// Monitor drives the timers of many connections from one goroutine: every
// tick it calls Tick on each connection. A per-connection timer or
// goroutine would cost memory on every idle connection; a scan every
// interval costs a few nanoseconds per connection.
type Monitor struct {
	interval time.Duration
	mu       sync.Mutex
	conns    map[*Conn]struct{}
	scratch  []*Conn
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// NewMonitor starts a monitor that ticks every interval (use
// Config.TickInterval). Close stops it.
func NewMonitor(interval time.Duration) *Monitor {
	if interval <= 0 {
		interval = DefaultConfig().TickInterval()
	}
	m := &Monitor{
		interval: interval,
		conns:    make(map[*Conn]struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go m.run()
	return m
}

// Add starts ticking c until it closes.
func (m *Monitor) Add(c *Conn) {
	m.mu.Lock()
	m.conns[c] = struct{}{}
	m.mu.Unlock()
	c.mon.Store(m)
	if c.isClosed.Load() {
		m.remove(c)
	}
}

func (m *Monitor) remove(c *Conn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
}

// Len is the number of connections being ticked.
func (m *Monitor) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.conns)
}

// Close stops the monitor and waits for its goroutine to end. Connections
// are left open.
func (m *Monitor) Close() {
	m.stopOnce.Do(func() { close(m.stop) })
	<-m.done
}

func (m *Monitor) run() {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			m.mu.Lock()
			m.scratch = m.scratch[:0]
			for c := range m.conns {
				m.scratch = append(m.scratch, c)
			}
			m.mu.Unlock()
			for i, c := range m.scratch {
				c.Tick(now)
				m.scratch[i] = nil
			}
		}
	}
}
