//go:build !linux

package sysinfo

import "errors"

func hostListenBacklogs() (map[uint64]int, error) {
	return nil, errors.New("listen backlogs: sock_diag needs Linux")
}
