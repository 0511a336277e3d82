// Package etcd keeps a fleet's addresses in etcd: a discovery resolver
// that watches a prefix of keys (the etcd:// scheme of package discovery),
// and the registration of a server instance under that prefix, with a
// lease that expires when the instance dies.
//
// It is a package of its own so that programs that do not use etcd do not
// link its client: import it for its side effect, as a database/sql
// driver, to make discovery.New (and client.Config.Target) understand
// etcd:// targets:
//
//	import _ "github.com/tcppro/tcppro/discovery/etcd"
//
// # Targets
//
//	etcd://HOST:PORT[,HOST:PORT...]/PREFIX
//
// names the etcd endpoints (a port defaults to 2379) and a key prefix:
// the keys under "/PREFIX/" (a slash is added at each end when missing,
// so that /services/echo does not also match /services/echo2). Each key's
// value is a server's address (host:port); values that are not are
// ignored. The endpoints are spoken to in plain gRPC, without TLS or
// authentication.
//
// # Resolving
//
// The resolver reads every key under the prefix, then watches the prefix
// from the revision it read, so that every put and delete after the read
// is seen; its sets are the sorted, deduplicated values. The prefix is
// read again (and the watch started anew) when the watch fails or is
// compacted past, every discovery.Options.Refresh (which also notices an
// etcd that stopped answering: a watch alone waits in silence), and soon
// after ResolveNow (not sooner than MinRefresh after the last read). When
// a read fails, the last good set is kept and the failure is reported in
// Set.Err (an *Error); reads then back off (MinRefresh doubling up to
// Refresh, ±20% jitter), so an etcd outage causes no storm of requests.
// Every request is bounded by Options.Timeout.
//
// # Registering
//
// Register (or NewRegistration, then Start) puts an instance's address
// under a prefix, at PREFIX/ADDR/ID with value ADDR, where ID is random
// per Registration: while a new process takes over an address (a
// zero-downtime restart), both keys exist and the address stays in the
// set. The key is attached to
// a lease (RegisterOptions.TTL, 10s by default) kept alive by the
// Registration, so a process that dies leaves the set within the TTL. The
// key is put back whenever it disappears (deleted by hand, lease expired
// during an outage), with retries that back off but never give up.
// Deregister (at drain or shutdown, before clients are sent GOAWAY)
// deletes the key and revokes the lease; Start registers again. The
// server's Config.OnServiceChange is the place to call both:
//
//	reg, err := etcd.NewRegistration("etcd://127.0.0.1:2379/services/echo", "10.0.0.5:7420", etcd.RegisterOptions{})
//	defer reg.Close()
//	cfg.OnServiceChange = func(inService bool) {
//		if inService {
//			reg.Start()
//			return
//		}
//		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
//		defer cancel()
//		reg.Deregister(ctx)
//	}
//	srv, err := server.New(cfg, handler)
//	go srv.ListenAndServe()
//	reg.Start() // once the listener is up
//
// The etcd client's own logs are discarded: failures are reported through
// Set.Err, Registration.Stats and RegisterOptions.Logger.
package etcd

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/tcppro/tcppro/discovery"
)

// Scheme is the discovery scheme of etcd targets.
const Scheme = "etcd"

// DefaultPort is the port of an endpoint given without one.
const DefaultPort = "2379"

func init() {
	discovery.Register(Scheme, func(rest string, o discovery.Options) (discovery.Resolver, error) {
		t, err := parseTarget(rest)
		if err != nil {
			return nil, err
		}
		return &Resolver{t: t, opts: o, now: make(chan struct{}, 1)}, nil
	})
}

// Error is a failed exchange with etcd: what was asked (Op: "get",
// "grant", "put", "keepalive", "delete", "revoke"), of which endpoints,
// and why (Err: a context deadline, an etcd error...).
type Error struct {
	Op        string
	Endpoints []string
	Err       error
}

func (e *Error) Error() string {
	return fmt.Sprintf("etcd %s (%s): %v", e.Op, strings.Join(e.Endpoints, ","), e.Err)
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// target is a parsed etcd:// target.
type target struct {
	endpoints []string
	prefix    string // starts and ends with "/"
}

// parseTarget parses the rest of "etcd://HOST:PORT[,HOST:PORT...]/PREFIX".
// Its errors wrap discovery.ErrBadTarget.
func parseTarget(rest string) (target, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", discovery.ErrBadTarget, Scheme+"://"+rest, fmt.Sprintf(format, args...))
	}
	authority, path, ok := strings.Cut(rest, "/")
	if !ok || strings.Trim(path, "/") == "" {
		return target{}, bad("no key prefix: want %s://HOST:PORT[,HOST:PORT]/PREFIX", Scheme)
	}
	if authority == "" {
		return target{}, bad("no etcd endpoint: want %s://HOST:PORT[,HOST:PORT]/PREFIX", Scheme)
	}
	var t target
	for i, ep := range strings.Split(authority, ",") {
		host, port, err := net.SplitHostPort(ep)
		if err != nil {
			host, port, err = net.SplitHostPort(ep + ":" + DefaultPort)
		}
		if err != nil || host == "" {
			return target{}, bad("endpoint %d %q: want HOST:PORT", i+1, ep)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return target{}, bad("endpoint %d %q: port %q is not in 1..65535", i+1, ep, port)
		}
		t.endpoints = append(t.endpoints, net.JoinHostPort(host, port))
	}
	t.prefix = "/" + strings.Trim(path, "/") + "/"
	return t, nil
}

// newClient returns an etcd client of the endpoints. It does not connect
// yet (gRPC connects in the background), so it fails only on a bad
// configuration. Its logs are discarded. Dead connections are found by
// gRPC keepalives within keepAlive + timeout. gRPC reconnects to etcd
// after lo, doubling up to hi (jittered by ±20%), each connect bounded by
// timeout: with gRPC's own defaults (1 s × 1.6 up to 120 s, connects of
// up to 20 s) an etcd back after a 30 s outage was reached 13–15 s later.
func newClient(endpoints []string, timeout, lo, hi time.Duration) (*clientv3.Client, error) {
	keepAlive := max(2*timeout, 10*time.Second)
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          timeout,
		DialKeepAliveTime:    keepAlive,
		DialKeepAliveTimeout: timeout,
		PermitWithoutStream:  true,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: lo, Multiplier: 2, Jitter: 0.2, MaxDelay: hi},
			MinConnectTimeout: timeout,
		})},
	})
}

// jittered returns d scaled by a random factor in [1-f, 1+f].
func jittered(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (1 - f + 2*f*rand.Float64()))
}

// backoff is the wait after the (failures+1)-th failure in a row: lo
// doubling up to hi, jittered by ±20%, never below lo.
func backoff(lo, hi time.Duration, failures int) time.Duration {
	d := lo
	for i := 0; i < failures && d < hi; i++ {
		d *= 2
	}
	return max(jittered(min(d, hi), 0.2), lo)
}
