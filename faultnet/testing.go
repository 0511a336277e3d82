package faultnet

import (
	"context"
	"errors"
	"os"
)

// TB is the part of testing.TB that ForTest uses (so this package does not
// import testing).
type TB interface {
	Helper()
	Cleanup(func())
	Skip(args ...any)
	Error(args ...any)
	Fatal(args ...any)
}

// RequireEnv names the environment variable that, set to 1, makes ForTest
// fail instead of skip when the lab is unsupported. CI sets it.
const RequireEnv = "TCPPRO_FAULTNET_REQUIRE"

// ForTest returns a new lab closed by t.Cleanup, which also runs when the
// test fails or panics. When the lab is unsupported here it skips the test
// with the reason, or fails it if RequireEnv is set to 1.
func ForTest(t TB) *Lab {
	t.Helper()
	return forTest(t)
}

func forTest(t TB, opts ...Option) *Lab {
	t.Helper()
	lab, err := New(context.Background(), opts...)
	if err != nil {
		if errors.Is(err, ErrUnsupported) && os.Getenv(RequireEnv) != "1" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	return lab
}
