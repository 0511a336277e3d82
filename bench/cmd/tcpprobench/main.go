// Command tcpprobench benchmarks tcppro (on its event loop, and with a
// goroutine per connection as tcppro-netconn) side by side against a minimal
// goroutine-per-connection std-net echo server, grpc-go and gnet on
// 127.0.0.1, and prints the ratios, the server CPU seconds per million
// requests, the server memory per connection and the heartbeat CPU at many
// idle connections, against tcppro's targets where it has one.
//
//	cd bench && go run ./cmd/tcpprobench            # full run, 3 reps
//	go run ./cmd/tcpprobench -quick                  # short smoke run
//	go run ./cmd/tcpprobench -json -cpuprofile prof  # JSON report + server CPU profiles
//	go run ./cmd/tcpprobench -out r.json -svg charts # + JSON file, one SVG chart per scenario
//
// The servers and connection holders are this same binary re-exec'd as child
// processes, so their CPU time and memory are measured alone.
package main

import (
	"os"

	"github.com/tcppro/tcppro/bench/internal/harness"
)

func main() {
	if harness.IsChild() {
		os.Exit(harness.ChildMain())
	}
	os.Exit(harness.Main(os.Args[1:], os.Stdout, os.Stderr))
}
