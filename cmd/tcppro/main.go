// Command tcppro runs the tcppro reference service and its tools:
//
//	tcppro serve    run the reference service (and its admin plane)
//	tcppro call     call a running service with the client library
//	tcppro doctor   audit this host against the TCP practices
//	tcppro verify   prove the liveness and timeout behaviours under real
//	                packet loss, in network namespaces (needs root)
//
// Every flag of every subcommand can also be set through an environment
// variable named TCPPRO_<FLAG>, upper-cased with dashes turned into
// underscores (--heartbeat-interval → TCPPRO_HEARTBEAT_INTERVAL). A flag
// given on the command line wins over the environment.
package main

import (
	"fmt"
	"os"
	"sort"
)

// command is one subcommand: it parses its own arguments and returns the
// process exit status.
type command struct {
	summary string
	run     func(args []string) int
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string) int) {
	commands[name] = command{summary: summary, run: run}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tcppro <command> [flags]")
	fmt.Fprintln(os.Stderr, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'tcppro <command> -h' for a command's flags.")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		os.Exit(0)
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "tcppro: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	os.Exit(cmd.run(os.Args[2:]))
}
