package verify

import (
	"context"
	"errors"
	"time"
)

const (
	rollingBound      = time.Minute
	scaleOutBound     = time.Minute
	registryLossBound = time.Minute
)

func rollingRestart(ctx context.Context, env *Env) (Result, error) {
	return Result{}, errors.New("not built yet")
}

func scaleOut(ctx context.Context, env *Env) (Result, error) {
	return Result{}, errors.New("not built yet")
}

func registryLoss(ctx context.Context, env *Env) (Result, error) {
	return Result{}, errors.New("not built yet")
}
