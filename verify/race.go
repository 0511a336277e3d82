//go:build race

package verify

// raceBuild reports a -race build: its processes' RSS includes the race
// detector's shadow memory and history, which grow with what it has seen
// and are never returned, so the soak judges their heap instead.
const raceBuild = true
