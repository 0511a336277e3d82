package verify

import (
	"context"
	"errors"
	"time"
)

const (
	dnsBound    = time.Minute
	subsetBound = time.Minute
)

func dnsChange(ctx context.Context, env *Env) (Result, error) {
	return Result{}, errors.New("not built yet")
}

func subsetting(ctx context.Context, env *Env) (Result, error) {
	return Result{}, errors.New("not built yet")
}
