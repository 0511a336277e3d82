package etcd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcppro/tcppro/discovery"
)

// Resolver is the discovery.Resolver of an etcd:// target (see the
// package comment). discovery.New returns one for etcd:// targets once
// this package is imported; NewResolver is the same without the
// indirection.
type Resolver struct {
	t     target
	opts  discovery.Options
	now   chan struct{}
	reads atomic.Uint64 // reads of the prefix, for tests
}

// NewResolver returns the resolver of an etcd:// target. Zero fields of
// opts take discovery's defaults; its errors match discovery.ErrBadTarget
// or discovery.ErrBadOptions.
func NewResolver(target string, opts discovery.Options) (*Resolver, error) {
	if !strings.HasPrefix(target, Scheme+"://") {
		return nil, fmt.Errorf("%w %q: want %s://HOST:PORT[,HOST:PORT]/PREFIX", discovery.ErrBadTarget, target, Scheme)
	}
	r, err := discovery.New(target, opts)
	if err != nil {
		return nil, err
	}
	return r.(*Resolver), nil
}

// Endpoints returns the etcd endpoints of the target.
func (r *Resolver) Endpoints() []string { return slices.Clone(r.t.endpoints) }

// Prefix returns the key prefix the resolver watches (starting and ending
// with "/").
func (r *Resolver) Prefix() string { return r.t.prefix }

// ResolveNow asks for the prefix to be read again soon: at once, or
// MinRefresh after the last read; while reads back off after failures,
// the backoff wins. It never blocks.
func (r *Resolver) ResolveNow() {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

// errWatchClosed reports a watch whose channel closed without an error.
var errWatchClosed = errors.New("watch ended")

// Run reads and watches the prefix until ctx ends (see the package
// comment), calling update with each set that differs from the last one.
// It returns when ctx ends, after closing its etcd client: no goroutine
// is left.
func (r *Resolver) Run(ctx context.Context, update func(discovery.Set)) {
	var (
		last     discovery.Set
		reported bool
		good     []string // the last good addresses
		failures int      // reads failed in a row
		unstable int      // watches failed in a row
	)
	report := func(set discovery.Set) {
		if !reported || !sameSet(last, set) {
			last, reported = set, true
			update(discovery.Set{Addrs: slices.Clone(set.Addrs), Err: set.Err})
		}
	}
	cli, err := newClient(r.t.endpoints, r.opts.Timeout, DefaultBackoffMin, DefaultBackoffMax)
	if err != nil { // a bad configuration: nothing to retry
		report(discovery.Set{Err: &Error{Op: "connect", Endpoints: r.t.endpoints, Err: err}})
		<-ctx.Done()
		return
	}
	defer cli.Close()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	wait := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		}
	}
	for {
		select {
		case <-r.now: // asked before this read: it answers that
		default:
		}
		keys, rev, err := r.read(ctx, cli)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			report(discovery.Set{Addrs: good, Err: err})
			if !wait(backoff(r.opts.MinRefresh, r.opts.Refresh, failures)) {
				return
			}
			failures++
			continue
		}
		failures = 0
		good = addrsOf(keys)
		report(discovery.Set{Addrs: good})
		err = r.follow(ctx, cli, keys, rev, func(addrs []string) {
			good = addrs
			report(discovery.Set{Addrs: addrs})
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			unstable = 0
			continue
		}
		// A watch that fails (compacted past, cancelled by etcd) is
		// replaced after a read; one that keeps failing backs off.
		if !wait(backoff(r.opts.MinRefresh, r.opts.Refresh, unstable)) {
			return
		}
		unstable++
	}
}

// read gets every key under the prefix, within Options.Timeout: the
// values by key, and the revision read.
func (r *Resolver) read(ctx context.Context, cli *clientv3.Client) (map[string]string, int64, error) {
	r.reads.Add(1)
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	resp, err := cli.Get(ctx, r.t.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, &Error{Op: "get", Endpoints: r.t.endpoints, Err: err}
	}
	keys := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		keys[string(kv.Key)] = string(kv.Value)
	}
	return keys, resp.Header.Revision, nil
}

// follow watches the prefix from the revision after rev, applying each
// change to keys and reporting the addresses after each batch of changes.
// It returns nil when the prefix is due to be read again (Refresh, or
// ResolveNow), or the watch's failure.
func (r *Resolver) follow(ctx context.Context, cli *clientv3.Client, keys map[string]string, rev int64, report func([]string)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Watch blocks until its stream is open, which an etcd gone since the
	// read never lets happen: it is started aside, and the prefix is read
	// again at Refresh whether or not it has started.
	started := make(chan clientv3.WatchChan, 1)
	go func() { started <- cli.Watch(wctx, r.t.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) }()
	var wch clientv3.WatchChan
	readAt := time.Now()
	next := readAt.Add(r.opts.Refresh)
	timer := time.NewTimer(r.opts.Refresh)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			return nil
		case <-r.now:
			if soonest := readAt.Add(r.opts.MinRefresh); soonest.Before(next) {
				next = soonest
				timer.Reset(time.Until(next))
			}
		case wch = <-started:
		case resp, ok := <-wch:
			if !ok {
				return errWatchClosed
			}
			if err := resp.Err(); err != nil {
				return &Error{Op: "watch", Endpoints: r.t.endpoints, Err: err}
			}
			if resp.Canceled {
				return &Error{Op: "watch", Endpoints: r.t.endpoints, Err: errWatchClosed}
			}
			if len(resp.Events) == 0 {
				continue // progress notification
			}
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					delete(keys, k)
				} else {
					keys[k] = string(ev.Kv.Value)
				}
			}
			report(addrsOf(keys))
		}
	}
}

// addrsOf returns the sorted, deduplicated values of keys that are
// host:port addresses.
func addrsOf(keys map[string]string) []string {
	addrs := make([]string, 0, len(keys))
	for v := range maps.Values(keys) {
		if validAddr(v) {
			addrs = append(addrs, v)
		}
	}
	slices.Sort(addrs)
	return slices.Compact(addrs)
}

// validAddr reports whether a is host:port with a host and a port.
func validAddr(a string) bool {
	host, port, err := net.SplitHostPort(a)
	return err == nil && host != "" && port != ""
}

// sameSet reports whether two sets have the same addresses and errors
// with the same text.
func sameSet(a, b discovery.Set) bool {
	if !slices.Equal(a.Addrs, b.Addrs) || (a.Err == nil) != (b.Err == nil) {
		return false
	}
	return a.Err == nil || a.Err.Error() == b.Err.Error()
}
