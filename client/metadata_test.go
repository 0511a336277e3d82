package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// mdEcho answers with the request's metadata as its body ("k=v;..."),
// and sends back every request key with the value upper-cased as the
// answer's metadata; method "fail" answers an ERROR carrying it.
var mdEcho = server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
	var b strings.Builder
	for _, f := range req.Metadata {
		fmt.Fprintf(&b, "%s=%s;", f.Key, f.Value)
		req.ResponseMetadata = append(req.ResponseMetadata, wire.Field{Key: f.Key, Value: strings.ToUpper(f.Value)})
	}
	if req.Method == "fail" {
		return nil, errors.New("failed with metadata")
	}
	return []byte(b.String()), nil
})

// TestMetadataRoundTrip: metadata sent with WithMetadata reaches the
// handler, and the answer's (of a RESPONSE or an ERROR) reaches
// ResponseMetadata.
func TestMetadataRoundTrip(t *testing.T) {
	_, addr := startServer(t, "", server.Config{}, mdEcho)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	ctx := context.Background()
	md := wire.Metadata{{Key: "traceparent", Value: "00-abc-def-01"}, {Key: "user", Value: "ada"}}
	var got wire.Metadata
	resp, err := c.Call(ctx, "echo", nil, client.WithMetadata(md), client.ResponseMetadata(&got))
	if err != nil || string(resp) != "traceparent=00-abc-def-01;user=ada;" {
		t.Fatalf("Call = %q, %v; want the handler to see the metadata", resp, err)
	}
	if v, _ := got.Get("user"); v != "ADA" || len(got) != 2 {
		t.Fatalf("response metadata %v", got)
	}

	got = nil
	_, err = c.Call(ctx, "fail", nil, client.WithMetadata(md[1:]), client.ResponseMetadata(&got))
	var ce *client.CallError
	if !errors.As(err, &ce) || ce.Code != wire.CodeApplication {
		t.Fatalf("err = %v, want APPLICATION", err)
	}
	if v, _ := got.Get("user"); v != "ADA" {
		t.Fatalf("an ERROR's metadata through ResponseMetadata: %v", got)
	}
	if v, _ := ce.Metadata.Get("user"); v != "ADA" {
		t.Fatalf("an ERROR's metadata on the CallError: %v", ce.Metadata)
	}

	// No metadata sent: the handler sees none, and none comes back.
	got = wire.Metadata{{Key: "stale", Value: "x"}}
	resp, err = c.Call(ctx, "echo", nil, client.ResponseMetadata(&got))
	if err != nil || len(resp) != 0 || len(got) != 0 {
		t.Fatalf("Call without metadata = %q, %v, response metadata %v", resp, err, got)
	}
}

// TestInvalidMetadataRefusedLocally: metadata the protocol forbids is
// refused before anything is sent.
func TestInvalidMetadataRefusedLocally(t *testing.T) {
	var handled atomic.Int64
	_, addr := startServer(t, "", server.Config{}, counting(&handled, mdEcho))
	c := newClient(t, client.Config{Addrs: []string{addr}})
	var many wire.Metadata
	for i := 0; i < 65; i++ {
		many = append(many, wire.Field{Key: fmt.Sprint("k", i), Value: "v"})
	}
	for name, md := range map[string]wire.Metadata{
		"upper-case key":  {{Key: "User", Value: "ada"}},
		"reserved key":    {{Key: "tcppro-version", Value: "2"}},
		"repeated key":    {{Key: "k", Value: "1"}, {Key: "k", Value: "2"}},
		"empty key":       {{Key: "", Value: "x"}},
		"65 entries":      many,
		"block too large": {{Key: "big", Value: strings.Repeat("x", 9000)}},
	} {
		if _, err := c.Call(context.Background(), "echo", nil, client.WithMetadata(md)); !errors.Is(err, wire.ErrInvalidMetadata) {
			t.Errorf("%s: %v, want ErrInvalidMetadata", name, err)
		}
	}
	if _, err := c.Call(context.Background(), "echo", nil, client.WithMetadata(wire.Metadata{{Key: "ok", Value: "1"}})); err != nil {
		t.Fatal(err)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("the server handled %d calls, want only the valid one", n)
	}
}

// TestInterceptors: interceptors wrap every call, the first outermost;
// they can add metadata, read the answer's, and refuse a call without it
// being sent.
func TestInterceptors(t *testing.T) {
	var handled atomic.Int64
	_, addr := startServer(t, "", server.Config{}, counting(&handled, mdEcho))
	var mu sync.Mutex
	var trace []string
	record := func(s string) {
		mu.Lock()
		trace = append(trace, s)
		mu.Unlock()
	}
	outer := func(ctx context.Context, method string, body, dst []byte, opts *client.CallOptions, next client.Invoker) ([]byte, error) {
		record("outer:" + method)
		opts.Metadata = append(slices.Clip(opts.Metadata), wire.Field{Key: "auth", Value: "token"})
		var md wire.Metadata
		if opts.ResponseMetadata == nil {
			opts.ResponseMetadata = &md
		}
		resp, err := next(ctx, method, body, dst, opts)
		v, _ := opts.ResponseMetadata.Get("auth")
		record("outer done: auth=" + v)
		return resp, err
	}
	inner := func(ctx context.Context, method string, body, dst []byte, opts *client.CallOptions, next client.Invoker) ([]byte, error) {
		record(fmt.Sprintf("inner:%s metadata %d", method, len(opts.Metadata)))
		if method == "forbidden" {
			return dst, errors.New("refused by the interceptor")
		}
		return next(ctx, method, body, dst, opts)
	}
	c := newClient(t, client.Config{Addrs: []string{addr}, Interceptors: []client.Interceptor{outer, inner}})
	resp, err := c.CallAppend(context.Background(), "echo", nil, []byte("got:"), client.WithMetadata(wire.Metadata{{Key: "user", Value: "ada"}}))
	if err != nil || string(resp) != "got:user=ada;auth=token;" {
		t.Fatalf("Call = %q, %v; want the interceptor's metadata added", resp, err)
	}
	_, err = c.Call(context.Background(), "forbidden", nil)
	if err == nil || err.Error() != "refused by the interceptor" {
		t.Fatalf("err = %v, want the interceptor's refusal", err)
	}
	want := []string{
		"outer:echo", "inner:echo metadata 2", "outer done: auth=TOKEN",
		"outer:forbidden", "inner:forbidden metadata 1", "outer done: auth=",
	}
	if !slices.Equal(trace, want) {
		t.Fatalf("interceptor trace\n%q\nwant\n%q", trace, want)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("the server handled %d calls, want 1 (the refused one never sent)", n)
	}
}
