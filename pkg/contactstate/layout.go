package contactstate

import "hash/fnv"

// Partition returns the partition of key among n partitions the way
// sarama's hash partitioner (sarama.NewHashPartitioner, which the gateway
// uses) places a record: FNV-1a 32 of the key, as a signed 32-bit integer,
// modulo n, its absolute value. A contact's events and its state record are
// both placed by it, each among its own topic's partitions.
func Partition(key []byte, n int32) int32 {
	h := fnv.New32a()
	_, _ = h.Write(key) // never fails
	p := int32(h.Sum32()) % n
	if p < 0 {
		p = -p
	}
	return p
}

// Sources returns the partitions of a state topic of s partitions that can
// hold the states of the contacts of events partition p, when the events
// topic has n: a key in events partition p (its hash ≡ p mod n) has its
// state in a partition q ≡ p modulo gcd(n, s). With as many partitions in
// both topics (as the worker creates them), that is partition p alone;
// with twice as many events partitions, p mod s.
func Sources(p, n, s int32) []int32 {
	g := gcd(n, s)
	var out []int32
	for q := p % g; q < s; q += g {
		out = append(out, q)
	}
	return out
}

func gcd(a, b int32) int32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
