//go:build linux && !race

package evloop

const raceEnabled = false
