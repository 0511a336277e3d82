package faultnet_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/faultnet"
)

// A command-line user: the lab is removed on Ctrl-C or SIGTERM even while
// the program is blocked, because New closes the lab when its context ends.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lab, err := faultnet.New(ctx)
	if err != nil {
		log.Fatal(err) // errors.Is(err, faultnet.ErrUnsupported) says why
	}
	defer lab.Close()

	srv, _ := lab.AddHost("server")
	cli, _ := lab.AddHost("client")
	link, err := lab.Link(cli, srv)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := srv.Listen("tcp", netip.AddrPortFrom(link.Addr(srv), 7000).String())
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	// The server's host stops answering connection attempts.
	if err := srv.BlackholeSYN(7000); err != nil {
		log.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = cli.Dial(dctx, "tcp", ln.Addr().String())
	fmt.Println(err) // dial tcp 198.18.0.2:7000: i/o timeout
}
