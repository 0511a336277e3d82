// Package refservice is the reference service that `tcppro serve` runs and
// the fault scenarios use: two methods, enough to show every behaviour.
//
//	echo   returns the request body, and the request's metadata with it
//	       (but for keys reserved to the protocol, tcppro-..., which a
//	       server may not send).
//	sleep  holds a business worker for the duration in the body ("250ms",
//	       "2s"; a bare number is milliseconds; default 1s), or until the
//	       request's deadline or its connection ends: used to show overload
//	       and the isolation of the admin plane.
package refservice

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// Handler returns the reference service.
func Handler() server.Handler {
	mux := server.NewMux()
	mux.HandleFunc("echo", echo)
	mux.HandleFunc("sleep", sleep)
	return mux
}

func echo(ctx context.Context, req *server.Request) ([]byte, error) {
	if len(req.Metadata) > 0 {
		md := make(wire.Metadata, 0, len(req.Metadata))
		for _, f := range req.Metadata {
			if !strings.HasPrefix(f.Key, wire.ReservedKeyPrefix) {
				md = append(md, f)
			}
		}
		req.ResponseMetadata = md
	}
	return req.Body, nil
}

func sleep(ctx context.Context, req *server.Request) ([]byte, error) {
	d := time.Second
	if len(req.Body) > 0 {
		v, err := time.ParseDuration(string(req.Body))
		if err != nil {
			if n, nerr := strconv.Atoi(string(req.Body)); nerr == nil {
				v, err = time.Duration(n)*time.Millisecond, nil
			}
		}
		if err != nil {
			return nil, fmt.Errorf("sleep: body %q is not a duration", req.Body)
		}
		d = v
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return []byte("slept " + d.String()), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
