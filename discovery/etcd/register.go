package etcd

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcppro/tcppro/discovery"
	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/session"
)

// RegisterOptions configure a Registration. The zero value of every field
// means its default, so RegisterOptions{} is valid.
type RegisterOptions struct {
	// TTL is the lease's time to live: how long the key outlives an
	// instance that died without deregistering. etcd counts whole seconds:
	// it is rounded up, and must be at least 1s. Default 10s.
	TTL time.Duration

	// Timeout bounds each request to etcd (grant, put, keepalive, get).
	// It must be shorter than TTL. Default 2s, or TTL/3 if shorter.
	Timeout time.Duration

	// DeregisterTimeout bounds Deregister's delete and revoke, and
	// Close's, when the caller's context has no earlier deadline: a
	// shutdown must not wait long for an etcd that does not answer (the
	// key then expires after TTL). Default 2s.
	DeregisterTimeout time.Duration

	// BackoffMin and BackoffMax bound the wait before a request is retried
	// after a failure: BackoffMin doubling after each further failure up
	// to BackoffMax, each wait drawn at random between half of that and
	// all of it. Retries never stop while the Registration is active.
	// Defaults 100ms and 5s.
	BackoffMin time.Duration
	BackoffMax time.Duration

	// InstanceID names this registration in its key, PREFIX/ADDR/ID. It
	// must not contain "/". Default: 16 random hexadecimal digits.
	InstanceID string

	// Logger receives the registration's logs: registered, lost (once per
	// streak of failures, at warn level; the retries at debug level),
	// deregistered. Default slog.Default().
	Logger *slog.Logger
}

// Defaults, as documented on RegisterOptions.
const (
	DefaultTTL               = 10 * time.Second
	DefaultRegisterTimeout   = 2 * time.Second
	DefaultDeregisterTimeout = 2 * time.Second
	DefaultBackoffMin        = 100 * time.Millisecond
	DefaultBackoffMax        = 5 * time.Second
)

func (o RegisterOptions) withDefaults() RegisterOptions {
	defaults.Set(&o.TTL, DefaultTTL)
	if o.TTL > 0 {
		o.TTL = (o.TTL + time.Second - 1).Truncate(time.Second)
	}
	defaults.Set(&o.Timeout, min(DefaultRegisterTimeout, o.TTL/3))
	defaults.Set(&o.DeregisterTimeout, DefaultDeregisterTimeout)
	defaults.Set(&o.BackoffMin, DefaultBackoffMin)
	defaults.Set(&o.BackoffMax, max(DefaultBackoffMax, o.BackoffMin))
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports the first invalid field, naming it and its value (a
// *session.ConfigError).
func (o RegisterOptions) Validate() error {
	bad := func(field string, v any, why string) error {
		return &session.ConfigError{Field: field, Value: v, Reason: why}
	}
	switch {
	case o.TTL < 0 || o.TTL > 0 && o.TTL < time.Second:
		return bad("TTL", o.TTL, "must be at least 1s (etcd leases count whole seconds)")
	case o.Timeout < 0:
		return bad("Timeout", o.Timeout, "must not be negative")
	case o.DeregisterTimeout < 0:
		return bad("DeregisterTimeout", o.DeregisterTimeout, "must not be negative")
	case o.BackoffMin < 0:
		return bad("BackoffMin", o.BackoffMin, "must not be negative")
	case strings.Contains(o.InstanceID, "/"):
		return bad("InstanceID", o.InstanceID, `must not contain "/"`)
	}
	d := o.withDefaults()
	switch {
	case d.Timeout >= d.TTL:
		return bad("Timeout", d.Timeout, fmt.Sprintf("must be shorter than TTL (%v), or the lease expires while a keepalive waits", d.TTL))
	case d.BackoffMax < d.BackoffMin:
		return bad("BackoffMax", d.BackoffMax, fmt.Sprintf("must be at least BackoffMin (%v)", d.BackoffMin))
	}
	return nil
}

// Registration keeps one instance's address registered under an etcd
// prefix (see the package comment) from Start to Deregister or Close. Its
// methods are safe for concurrent use.
type Registration struct {
	opts      RegisterOptions
	endpoints []string
	addr, key string
	registry  string // etcd://ENDPOINTS
	cli       *clientv3.Client
	log       *slog.Logger

	registered    atomic.Bool
	attempts      atomic.Uint64
	failures      atomic.Uint64
	registrations atomic.Uint64
	errMu         sync.Mutex
	lastErr       error

	mu     sync.Mutex // serialises Start, Deregister and Close
	active bool       // started: a keeper runs
	closed bool
	stop   context.CancelFunc
	done   chan struct{}    // closed when the keeper has returned
	lease  clientv3.LeaseID // written by the keeper before done closes
}

// RegistrationStats are a Registration's counters, for metrics.
type RegistrationStats struct {
	// Registered is Registered().
	Registered bool
	// Attempts counts tries to create the key (a lease granted if needed,
	// then the put).
	Attempts uint64
	// Failures counts requests to etcd that failed (grant, put,
	// keepalive, get), and keys found gone or leases expired.
	Failures uint64
	// Registrations counts the times the key was created: the first, and
	// each re-creation after it was lost.
	Registrations uint64
	// Err is the last failure since the key was last confirmed, or nil.
	Err error
}

// Register is NewRegistration followed by Start: the instance is
// registered in the background from now on.
func Register(target, addr string, opts RegisterOptions) (*Registration, error) {
	r, err := NewRegistration(target, addr, opts)
	if err != nil {
		return nil, err
	}
	r.Start()
	return r, nil
}

// NewRegistration validates its arguments and returns the registration
// of addr under the prefix of target (etcd://HOST:PORT[,HOST:PORT]/PREFIX),
// at PREFIX/ADDR/ID; Start starts it. It does not talk to etcd: the key
// is created in the background after Start, and re-created with retries
// for as long as the Registration is started, so that an etcd outage
// never stops the instance from serving. Registered tells whether the key
// is in place. Close it when done.
//
// addr is the address clients dial (host:port): not an unspecified
// address such as 0.0.0.0. Errors match discovery.ErrBadTarget (target),
// or are a *session.ConfigError naming the bad field ("Addr" or a field
// of opts).
func NewRegistration(target, addr string, opts RegisterOptions) (*Registration, error) {
	rest, ok := strings.CutPrefix(target, Scheme+"://")
	if !ok {
		return nil, fmt.Errorf("%w %q: want %s://HOST:PORT[,HOST:PORT]/PREFIX", discovery.ErrBadTarget, target, Scheme)
	}
	t, err := parseTarget(rest)
	if err != nil {
		return nil, err
	}
	if err := checkAddr(addr); err != "" {
		return nil, &session.ConfigError{Field: "Addr", Value: addr, Reason: err}
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if opts.InstanceID == "" {
		var b [8]byte
		_, _ = crand.Read(b[:])
		opts.InstanceID = hex.EncodeToString(b[:])
	}
	cli, err := newClient(t.endpoints, opts.Timeout, opts.BackoffMin, opts.BackoffMax)
	if err != nil {
		return nil, &Error{Op: "connect", Endpoints: t.endpoints, Err: err}
	}
	registry := Scheme + "://" + strings.Join(t.endpoints, ",")
	return &Registration{
		opts:      opts,
		endpoints: t.endpoints,
		addr:      addr,
		key:       t.prefix + addr + "/" + opts.InstanceID,
		registry:  registry,
		cli:       cli,
		log:       opts.Logger.With("registry", registry),
	}, nil
}

// checkAddr returns why addr cannot be registered, or "".
func checkAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return "want host:port"
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return "an unspecified address cannot be dialled: give the address clients should dial"
	}
	return ""
}

// Key returns the registration's key, PREFIX/ADDR/ID.
func (r *Registration) Key() string { return r.key }

// String returns the registry and the key: etcd://ENDPOINTS/PREFIX/ADDR/ID.
func (r *Registration) String() string { return r.registry + r.key }

// Addr returns the registered address (the key's value).
func (r *Registration) Addr() string { return r.addr }

// Registered reports whether the last exchange with etcd confirmed the
// key: false before the first put, while etcd does not answer, after the
// key or its lease was found gone (until it is put back), and when not
// started.
func (r *Registration) Registered() bool { return r.registered.Load() }

// Stats returns the registration's counters.
func (r *Registration) Stats() RegistrationStats {
	r.errMu.Lock()
	err := r.lastErr
	r.errMu.Unlock()
	return RegistrationStats{
		Registered:    r.registered.Load(),
		Attempts:      r.attempts.Load(),
		Failures:      r.failures.Load(),
		Registrations: r.registrations.Load(),
		Err:           err,
	}
}

// Deregister takes the instance out of the registry: it stops keeping the
// key, deletes it and revokes its lease, within ctx and
// RegisterOptions.DeregisterTimeout. If etcd does not answer in time, the
// key expires after the TTL. Deregistering a Registration that is not
// started (or closed) does nothing and returns nil; Start registers it
// again.
func (r *Registration) Deregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deregister(ctx)
}

func (r *Registration) deregister(ctx context.Context) error {
	if !r.active {
		return nil
	}
	r.active = false
	r.stop()
	<-r.done
	r.registered.Store(false)
	ctx, cancel := context.WithTimeout(ctx, r.opts.DeregisterTimeout)
	defer cancel()
	var errs []error
	if _, err := r.cli.Delete(ctx, r.key); err != nil {
		errs = append(errs, &Error{Op: "delete", Endpoints: r.endpoints, Err: err})
	}
	if r.lease != 0 {
		if _, err := r.cli.Revoke(ctx, r.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			errs = append(errs, &Error{Op: "revoke", Endpoints: r.endpoints, Err: err})
		}
		r.lease = 0
	}
	err := errors.Join(errs...)
	if err != nil {
		r.log.Warn("etcd: deregistering failed; the key expires with its lease", "key", r.key, "ttl", r.opts.TTL, "err", err)
	} else {
		r.log.Info("etcd: deregistered", "key", r.key)
	}
	return err
}

// Start starts registering the instance: the key is created in the
// background, kept, and re-created whenever it disappears, until
// Deregister or Close. It returns at once. It does nothing while the
// Registration is started, and after Close.
func (r *Registration) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.active && !r.closed {
		r.start()
	}
}

// Close deregisters the instance (bounded by DeregisterTimeout), then
// closes the etcd client: no goroutine is left. It returns Deregister's
// error; later calls do nothing.
func (r *Registration) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	err := r.deregister(context.Background())
	r.closed = true
	r.cli.Close()
	return err
}

// start starts the keeper; r.mu is held.
func (r *Registration) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.active, r.stop, r.done = true, cancel, make(chan struct{})
	go r.keep(ctx, r.done)
}

// errKeyLost reports a key deleted, or replaced, while its lease lived.
var errKeyLost = errors.New("the key was deleted or replaced")

// keep is the keeper: it creates the key, keeps its lease alive and
// puts it back when it disappears, until ctx ends.
func (r *Registration) keep(ctx context.Context, done chan struct{}) {
	var lease clientv3.LeaseID
	defer func() {
		r.lease = lease
		close(done)
	}()
	failures := 0 // in a row
	for ctx.Err() == nil {
		rev, err := r.create(ctx, &lease)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.failed(err, failures)
			if !sleep(ctx, r.retryDelay(failures)) {
				return
			}
			failures++
			continue
		}
		failures = 0
		r.registrations.Add(1)
		r.confirmed(lease)
		err = r.hold(ctx, lease, rev)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			lease = 0
		}
		r.failed(err, 0)
		// The key is put back at once; failures then back off.
	}
}

// create puts the key, attached to *lease (granted first if 0): the
// revision of the put.
func (r *Registration) create(ctx context.Context, lease *clientv3.LeaseID) (int64, error) {
	r.attempts.Add(1)
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	if *lease == 0 {
		g, err := r.cli.Grant(ctx, int64(r.opts.TTL/time.Second))
		if err != nil {
			return 0, &Error{Op: "grant", Endpoints: r.endpoints, Err: err}
		}
		*lease = g.ID
	}
	p, err := r.cli.Put(ctx, r.key, r.addr, clientv3.WithLease(*lease))
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			*lease = 0
		}
		return 0, &Error{Op: "put", Endpoints: r.endpoints, Err: err}
	}
	return p.Header.Revision, nil
}

// hold keeps the lease alive (every TTL/3) and watches the key, until ctx
// ends (nil) or the key or its lease is found gone (the reason).
func (r *Registration) hold(ctx context.Context, lease clientv3.LeaseID, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Watch blocks until its stream is open, which an etcd gone since the
	// put never lets happen: it is started aside, so that the keepalives
	// go on (and find etcd gone) meanwhile.
	started := make(chan clientv3.WatchChan, 1)
	go func() { started <- r.cli.Watch(wctx, r.key, clientv3.WithRev(rev+1)) }()
	var wch clientv3.WatchChan
	interval := r.opts.TTL / 3
	timer := time.NewTimer(interval)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case wch = <-started:
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || resp.Canceled {
				wch = nil // the keepalives check the key instead
				continue
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete || ev.Kv.Lease != int64(lease) {
					return &Error{Op: "watch", Endpoints: r.endpoints, Err: errKeyLost}
				}
			}
		case <-timer.C:
			err := r.refresh(ctx, lease)
			switch {
			case ctx.Err() != nil:
				return nil
			case err == nil:
				failures = 0
				r.confirmed(lease)
				timer.Reset(interval)
			case errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, errKeyLost):
				return err
			default:
				r.failed(err, failures)
				timer.Reset(min(interval, r.retryDelay(failures)))
				failures++
			}
		}
	}
}

// refresh keeps the lease alive once and checks that the key is still
// there, attached to it.
func (r *Registration) refresh(ctx context.Context, lease clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	if _, err := r.cli.KeepAliveOnce(ctx, lease); err != nil {
		return &Error{Op: "keepalive", Endpoints: r.endpoints, Err: err}
	}
	g, err := r.cli.Get(ctx, r.key)
	if err != nil {
		return &Error{Op: "get", Endpoints: r.endpoints, Err: err}
	}
	if len(g.Kvs) == 0 || g.Kvs[0].Lease != int64(lease) {
		return &Error{Op: "get", Endpoints: r.endpoints, Err: errKeyLost}
	}
	return nil
}

// confirmed records that etcd confirmed the key.
func (r *Registration) confirmed(lease clientv3.LeaseID) {
	r.errMu.Lock()
	r.lastErr = nil
	r.errMu.Unlock()
	if !r.registered.Swap(true) {
		r.log.Info("etcd: registered", "key", r.key, "addr", r.addr, "lease", fmt.Sprintf("%x", int64(lease)), "ttl", r.opts.TTL)
	}
}

// failed records a failure, the streak-th in a row: the first is logged
// as a warning, the others at debug level.
func (r *Registration) failed(err error, streak int) {
	r.failures.Add(1)
	r.errMu.Lock()
	r.lastErr = err
	r.errMu.Unlock()
	was := r.registered.Swap(false)
	if was || streak == 0 {
		r.log.Warn("etcd: not registered; retrying", "key", r.key, "err", err)
	} else {
		r.log.Debug("etcd: not registered; retrying", "key", r.key, "err", err, "failures", streak+1)
	}
}

// retryDelay is the wait after the (failures+1)-th failure in a row:
// BackoffMin doubling up to BackoffMax, drawn from [half, all] of it.
func (r *Registration) retryDelay(failures int) time.Duration {
	d := r.opts.BackoffMin
	for i := 0; i < failures && d < r.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, r.opts.BackoffMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
