package harness

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
)

// The grpc side: grpc-go serving one unary method, /tcpprobench.Echo/Echo,
// that returns its request. There is no generated code: the service is a
// hand-written grpc.ServiceDesc and the messages are raw bytes, marshalled by
// rawCodec (registered under the content-subtype "rawbytes", which every
// call of the harness selects), so a call carries the same 64-byte payload
// as a tcppro call, in one HTTP/2 stream with its HEADERS and DATA frames.

const (
	grpcCodecName  = "rawbytes"
	grpcEchoMethod = "/tcpprobench.Echo/Echo"
)

// Keepalive, comparable to tcppro's heartbeats (Session.HeartbeatInterval
// 5s, HeartbeatTimeout 10s by default).
//
// Server: keepalive.ServerParameters{Time: 5s, Timeout: 10s} — the server
// PINGs a connection it has received nothing on for 5s and closes it if the
// ack has not come 10s later; in the heartbeat scenario Time is the
// scenario's interval (1s). keepalive.EnforcementPolicy{MinTime: 5s,
// PermitWithoutStream: true} lets the clients' own PINGs through.
//
// Client: keepalive.ClientParameters{Time: 10s, Timeout: 10s,
// PermitWithoutStream: true}. grpc-go raises a client Time below 10s to 10s
// (keepalive package docs), so 10s is what a 5s setting would give anyway;
// as the server's PINGs are reads for the client, an idle client whose server
// PINGs every 5s (or 1s) never sends PINGs of its own.
const (
	grpcServerKeepaliveTime    = 5 * time.Second
	grpcServerKeepaliveTimeout = 10 * time.Second
	grpcEnforcementMinTime     = 5 * time.Second
	grpcClientKeepaliveTime    = 10 * time.Second
	grpcClientKeepaliveTimeout = 10 * time.Second
)

func init() { encoding.RegisterCodec(rawCodec{}) }

// rawCodec marshals []byte (or *[]byte) as itself and unmarshals into a
// *[]byte, reusing its capacity.
type rawCodec struct{}

func (rawCodec) Name() string { return grpcCodecName }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

// grpcEchoDesc is the hand-written service: one unary method echoing its
// request.
var grpcEchoDesc = grpc.ServiceDesc{
	ServiceName: "tcpprobench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var b []byte
			if err := dec(&b); err != nil {
				return nil, err
			}
			return b, nil
		},
	}},
	Metadata: "tcpprobench",
}

// startGrpcServer serves ln with grpc-go at its defaults plus the keepalive
// above (Time = keepaliveTime when set), over TLS when conf is set.
func startGrpcServer(ln net.Listener, conf *tls.Config, keepaliveTime time.Duration) (stop func()) {
	if keepaliveTime <= 0 {
		keepaliveTime = grpcServerKeepaliveTime
	}
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: grpcServerKeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: grpcEnforcementMinTime, PermitWithoutStream: true}),
	}
	if conf != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(conf)))
	}
	srv := grpc.NewServer(opts...)
	srv.RegisterService(&grpcEchoDesc, struct{}{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	return func() {
		done := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			srv.Stop()
		}
		<-served
	}
}

// grpcConn is one grpc.ClientConn: one connection (pick_first, passthrough
// resolver), connected and Ready before use.
type grpcConn struct{ cc *grpc.ClientConn }

// newGrpcConn makes a ClientConn to addr with the client keepalive above,
// no idle timeout, and waits until it is Ready (10s at most). With conn set,
// the ClientConn uses that connection (already dialed) and fails any later
// reconnection, so that a connection the server closes stays closed.
func newGrpcConn(addr string, conf *tls.Config, conn net.Conn) (*grpcConn, error) {
	creds := insecure.NewCredentials()
	if conf != nil {
		creds = credentials.NewTLS(conf)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: grpcClientKeepaliveTime, Timeout: grpcClientKeepaliveTimeout, PermitWithoutStream: true,
		}),
		grpc.WithIdleTimeout(0),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(grpcCodecName)),
	}
	if conn != nil {
		var used atomic.Bool
		opts = append(opts, grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used.Swap(true) {
				return nil, errors.New("held connection already used")
			}
			return conn, nil
		}))
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if s == connectivity.TransientFailure || s == connectivity.Shutdown || !cc.WaitForStateChange(ctx, s) {
			cc.Close()
			return nil, fmt.Errorf("grpc connection %s: %v", addr, s)
		}
	}
	return &grpcConn{cc: cc}, nil
}

func (c *grpcConn) call(ctx context.Context, payload, buf []byte) ([]byte, error) {
	resp := buf[:0]
	err := c.cc.Invoke(ctx, grpcEchoMethod, payload, &resp)
	return resp, err
}

func (c *grpcConn) close() error { return c.cc.Close() }

// ---- grpc holder (memory and heartbeat scenarios) ----

// grpcHolder holds one ClientConn per connection, with the client
// keepalive above; each answers the server's keepalive PINGs.
type grpcHolder struct {
	mu    sync.Mutex
	conns []*grpcConn
}

func (h *grpcHolder) add(c net.Conn, i int) error {
	gc, err := newGrpcConn(c.RemoteAddr().String(), nil, c)
	if err != nil {
		c.Close()
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.conns) <= i {
		h.conns = append(h.conns, nil)
	}
	h.conns[i] = gc
	return nil
}

func (h *grpcHolder) requestAll() (ok, failed int, first string) {
	var mu sync.Mutex
	forEachLimited(len(h.conns), 128, func(i int) {
		var body [msgSize]byte
		fillMsg(body[:], i, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := h.conns[i].call(ctx, body[:], nil)
		cancel()
		if err == nil && string(resp) != string(body[:]) {
			err = fmt.Errorf("echo mismatch: %q", resp)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			if first == "" {
				first = fmt.Sprintf("conn %d: %v", i, err)
			}
			return
		}
		ok++
	})
	return ok, failed, first
}

// alive counts the ClientConns still Ready: one whose connection the server
// closed cannot reconnect (see newGrpcConn) and leaves Ready.
func (h *grpcHolder) alive() int {
	n := 0
	for _, c := range h.conns {
		if c.cc.GetState() == connectivity.Ready {
			n++
		}
	}
	return n
}
