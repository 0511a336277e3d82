package etcd

// Reads returns how many times r read its prefix.
func Reads(r *Resolver) uint64 { return r.reads.Load() }
