package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/wire"
)

func init() {
	register("call", "call a running service and print each response", runCall)
}

func runCall(args []string) int {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: tcppro call [flags] MESSAGE")
		fs.PrintDefaults()
	}
	d := client.DefaultConfig()
	addrs := fs.String("addr", defaultListen, "server addresses, comma-separated host:port list")
	target := fs.String("target", "", "the servers as a discovery `TARGET` instead of --addr: dns:///name:port, dns+srv:///_service._tcp.name, dns://RESOLVER/name:port, etcd://HOST:PORT[,HOST:PORT]/PREFIX (a watched key prefix), or host:port,host:port; re-resolved while calls run")
	method := fs.String("method", "echo", "method to call: echo or sleep (MESSAGE is then a duration)")
	count := fs.Int("count", 1, "number of calls")
	concurrency := fs.Int("concurrency", 1, "calls in flight at once")
	timeout := fs.Duration("timeout", 5*time.Second, "deadline of each call")
	dialTimeout := fs.Duration("dial-timeout", d.DialTimeout, "connect timeout")
	transport := fs.String("transport", string(netx.TransportAuto), "what moves the connections' bytes: auto (the default: the event loop for plain TCP on Linux, a goroutine per connection over TLS), epoll (the event loop, Linux, plain TCP only), netconn (a goroutine per connection)")
	policy := fs.String("balancer", string(balancer.P2C), "how calls are spread over the servers: p2c (power of two choices on latency × calls in flight) or round-robin")
	subset := fs.Int("subset", 0, "connect to a deterministic subset of this many servers (0: every one)")
	subsetID := fs.Int("subset-id", 0, "this client's id among the fleet's clients, from 1, for --subset (0: random)")
	stats := fs.Bool("stats", false, "after the calls, print the client's counters and each server's state (ready, ejected, latency, calls) to stderr")
	quiet := fs.Bool("quiet", false, "print only the summary")
	var verbose bool
	fs.BoolVar(&verbose, "verbose", false, "also print each answer's metadata, one line per entry: N metadata key=value")
	fs.BoolVar(&verbose, "v", false, "short for --verbose")
	var md metadataFlag
	fs.Var(&md, "metadata", "`key=value` metadata sent with each call; repeat for more entries (the environment variable holds one)")
	useTLS := fs.Bool("tls", false, "speak TLS, trusting the system's CAs unless --tls-ca is given (implied by the other --tls-* flags)")
	tlsCA := fs.String("tls-ca", "", "trust the PEM CA certificates in `FILE` for the server's certificate (default: the system's)")
	tlsCert := fs.String("tls-cert", "", "present the PEM client certificate in `FILE` (mutual TLS; needs --tls-key)")
	tlsKey := fs.String("tls-key", "", "the PEM private key of --tls-cert, in `FILE`")
	tlsServerName := fs.String("tls-server-name", "", "`NAME` to verify the server's certificate against (default: the host of each --addr)")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "tcppro call:", err)
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(os.Stderr, "tcppro call: one MESSAGE argument expected (quote it)")
		return 2
	}
	msg := strings.Join(fs.Args(), " ")
	if *count < 1 || *concurrency < 1 {
		fmt.Fprintln(os.Stderr, "tcppro call: --count and --concurrency must be at least 1")
		return 2
	}
	if err := wire.Metadata(md).Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "tcppro call: --metadata:", err)
		return 2
	}
	tlsCfg, err := clientTLS(*useTLS, *tlsCA, *tlsCert, *tlsKey, *tlsServerName)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro call:", err)
		return 2
	}
	var addrList []string // --target, when given, replaces --addr
	if *target == "" {
		addrList = strings.Split(*addrs, ",")
	}
	cl, err := client.New(client.Config{
		Addrs:       addrList,
		Target:      *target,
		DialTimeout: *dialTimeout,
		Transport:   netx.Transport(*transport),
		TLS:         tlsCfg,
		Balancer:    balancer.Config{Policy: balancer.Policy(*policy), Subset: *subset, SubsetID: *subsetID},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro call:", flagError(err, callFlagOf))
		return 2
	}
	defer cl.Close()
	if *stats {
		defer printClientStats(os.Stderr, cl)
	}

	var next, failed atomic.Int64
	var outMu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(*concurrency, *count); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(*count) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				t0 := time.Now()
				var respMD wire.Metadata
				opts := []client.CallOption{client.WithMetadata(wire.Metadata(md))}
				if verbose {
					opts = append(opts, client.ResponseMetadata(&respMD))
				}
				resp, err := cl.Call(ctx, *method, []byte(msg), opts...)
				cancel()
				el := time.Since(t0).Round(time.Microsecond)
				if err != nil {
					failed.Add(1)
				}
				if *quiet {
					continue
				}
				outMu.Lock()
				if err != nil {
					fmt.Printf("%d\terror\t%v\t%v\n", i, el, err)
				} else {
					fmt.Printf("%d\tok\t%v\t%s\n", i, el, resp)
				}
				for _, f := range respMD {
					fmt.Printf("%d\tmetadata\t%s=%s\n", i, f.Key, printable(f.Value))
				}
				outMu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	fmt.Fprintf(os.Stderr, "%d calls, %d failed, %v, %.0f calls/s\n", *count, failed.Load(), el.Round(time.Millisecond), float64(*count)/el.Seconds())
	if failed.Load() > 0 {
		return 1
	}
	return 0
}

// callFlagOf maps the configuration fields that validation can name to
// their flags.
var callFlagOf = map[string]string{
	"Balancer.Policy":   "balancer",
	"Balancer.Subset":   "subset",
	"Balancer.SubsetID": "subset-id",
	"DialTimeout":       "dial-timeout",
	"Transport":         "transport",
}

// printClientStats prints the client's counters and a table of its
// servers.
func printClientStats(w io.Writer, cl *client.Client) {
	s := cl.Stats()
	fmt.Fprintf(w, "client: %d servers, %d dials (%d failed), %d reconnects, %d GOAWAYs, %d retries (%d throttled), %d dead peers, %d ejections, %d returns, %d ejected now",
		s.Endpoints, s.Dials, s.DialFailures, s.Reconnects, s.GoAways, s.Retries, s.RetriesThrottled, s.DeadPeers+s.WriteTimeouts, s.Ejections, s.EjectionReturns, s.Ejected)
	if s.Panic {
		fmt.Fprint(w, " (panic: every ready server is ejected)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tSTATE\tEJECTED\tEJECTIONS\tWARM-UP\tIN FLIGHT\tLATENCY\tOK\tFAILED\tLAST ERROR")
	for _, e := range cl.Endpoints() {
		ejected := "-"
		if e.Ejected {
			ejected = "for " + e.EjectedFor.Round(time.Second).String()
		}
		last := ""
		if e.LastError != nil {
			last = e.LastError.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f%%\t%d\t%v\t%d\t%d\t%s\n", e.Addr, e.State, ejected, e.Ejections,
			100*e.WarmUp, e.InFlight, e.Latency.Round(time.Microsecond), e.Successes, e.Failures, last)
	}
	tw.Flush()
}

// metadataFlag collects repeated --metadata key=value flags.
type metadataFlag wire.Metadata

func (m *metadataFlag) String() string {
	if m == nil {
		return ""
	}
	parts := make([]string, len(*m))
	for i, f := range *m {
		parts[i] = f.Key + "=" + f.Value
	}
	return strings.Join(parts, " ")
}

func (m *metadataFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q is not key=value", s)
	}
	if err := (wire.Metadata{{Key: k, Value: v}}).Validate(); err != nil {
		return err
	}
	*m = append(*m, wire.Field{Key: k, Value: v})
	return nil
}

// printable returns s as it is when it is printable text without tabs or
// line breaks, Go-quoted otherwise, so that each entry stays on one line.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			return strconv.Quote(s)
		}
	}
	return s
}
