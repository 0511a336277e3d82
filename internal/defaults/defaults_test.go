package defaults

import (
	"testing"
	"time"
)

func TestSet(t *testing.T) {
	var unset time.Duration
	Set(&unset, time.Second)
	if unset != time.Second {
		t.Fatalf("zero field became %v, want the default 1s", unset)
	}
	set := 5 * time.Millisecond
	Set(&set, time.Second)
	if set != 5*time.Millisecond {
		t.Fatalf("set field became %v, want it kept at 5ms", set)
	}
	neg := -1
	Set(&neg, 3)
	if neg != -1 {
		t.Fatalf("negative field became %d, want it kept (only zero means unset)", neg)
	}
}
