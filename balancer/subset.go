package balancer

import (
	"math/rand/v2"
	"slices"
)

// Subset returns the servers of addrs that the client numbered id (from
// 0) connects to when each client connects to size of them: the
// deterministic subsetting of the Google SRE book, chapter 20. The
// servers, sorted, are split into len/size subsets; clients take them in
// turn, and each round of len/size clients shuffles the servers anew (with
// the round number as seed), so that the servers left over when size does
// not divide len differ from round to round. Clients with consecutive ids
// therefore spread their connections evenly: over a whole round, each
// server has the same number of clients. With size ≤ 0 or size ≥ len, it
// returns every server. The result is the same in every process (the
// shuffle is tcppro's own, on a fixed generator), sorted; addrs is not
// changed.
//
// A change of the server list changes many subsets (every client of the
// round may move): subsetting trades that churn for fewer connections.
func Subset(addrs []string, size, id int) []string {
	all := slices.Clone(addrs)
	slices.Sort(all)
	all = slices.Compact(all)
	if size <= 0 || size >= len(all) {
		return all
	}
	subsets := len(all) / size
	round := id / subsets
	r := rand.New(rand.NewPCG(uint64(round), 0x7463707072_6f7375)) // fixed stream: "tcppro" "su"
	for i := len(all) - 1; i > 0; i-- {
		j := int(r.Uint64() % uint64(i+1))
		all[i], all[j] = all[j], all[i]
	}
	k := id % subsets
	sub := all[k*size : (k+1)*size]
	slices.Sort(sub)
	return sub
}
