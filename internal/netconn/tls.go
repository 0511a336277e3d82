package netconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/tcppro/tcppro/session"
)

// Handshake runs tc's TLS handshake, bounded by timeout and by ctx. On
// failure it closes the connection; a handshake cut by the timeout fails
// with an error matching session.ErrHandshakeTimeout.
func Handshake(ctx context.Context, tc *tls.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := tc.HandshakeContext(ctx)
	if err == nil {
		return nil
	}
	tc.NetConn().Close()
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: TLS: %w", session.ErrHandshakeTimeout, err)
	}
	return err
}
