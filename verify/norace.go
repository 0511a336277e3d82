//go:build !race

package verify

// raceBuild reports a -race build (see race.go).
const raceBuild = false
