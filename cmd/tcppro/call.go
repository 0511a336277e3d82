package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/client"
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
	method := fs.String("method", "echo", "method to call: echo or sleep (MESSAGE is then a duration)")
	count := fs.Int("count", 1, "number of calls")
	concurrency := fs.Int("concurrency", 1, "calls in flight at once")
	timeout := fs.Duration("timeout", 5*time.Second, "deadline of each call")
	dialTimeout := fs.Duration("dial-timeout", d.DialTimeout, "connect timeout")
	quiet := fs.Bool("quiet", false, "print only the summary")
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
	cl, err := client.New(client.Config{
		Addrs:       strings.Split(*addrs, ","),
		DialTimeout: *dialTimeout,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro call:", err)
		return 2
	}
	defer cl.Close()

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
				resp, err := cl.Call(ctx, *method, []byte(msg))
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
