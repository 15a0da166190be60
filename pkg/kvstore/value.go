package kvstore

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// valueVersion is the first byte of every value this version writes.
// Counters of version 2 (without an incarnation) are still read.
const valueVersion = 3

// intVersion is the first byte of the one-integer values (heartbeats,
// connection counts, Strict buckets), whose format has not changed.
const intVersion = 2

// counter is the value of one node's counter of a Global bucket: a
// grow-only cumulative consumption within the writer's epoch (a process
// start), with what the reader needs to debit it on first sight.
type counter struct {
	epoch      uint64
	inc        uint64  // incarnation of the writer's entry within the epoch
	cum        int64   // tokens consumed by the writer in this incarnation
	refunded   int64   // tokens the writer gave back in this incarnation
	at         int64   // UnixNano of the write; the reader replaces it by its own dating (see consume)
	unrefilled float64 // writer's own consumption not yet refilled at `at`
	demand     float64 // writer's requested tokens per second, smoothed
	reserved   float64 // allowance the writer holds and may still spend
	hold       int64   // how long (ns) from receipt the reader sets reserved aside
	alone      bool    // the writer had heard of no other node's demand when it renewed
	level      float64 // writer's view of the bucket's tokens at `at` (negative in debt)
	spec       limiter.Spec
}

const counterSize = 1 + 14*8

// counterSizeV2 is the size of a version 2 counter: no incarnation,
// refunds, hold or flags.
const counterSizeV2 = 1 + 10*8

func (c *counter) marshal(b []byte) []byte {
	b = append(b[:0], valueVersion)
	b = binary.LittleEndian.AppendUint64(b, c.epoch)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.cum))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.at))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(c.unrefilled))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(c.demand))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(c.reserved))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(c.level))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.spec.Limit))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.spec.Per))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.spec.Burst))
	b = binary.LittleEndian.AppendUint64(b, c.inc)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.refunded))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.hold))
	var flags uint64
	if c.alone {
		flags |= 1
	}
	b = binary.LittleEndian.AppendUint64(b, flags)
	return b
}

func (c *counter) unmarshal(b []byte) bool {
	switch {
	case len(b) == counterSize && b[0] == valueVersion:
		c.inc = binary.LittleEndian.Uint64(b[1+10*8:])
		c.refunded = int64(binary.LittleEndian.Uint64(b[1+11*8:]))
		c.hold = int64(binary.LittleEndian.Uint64(b[1+12*8:]))
		c.alone = binary.LittleEndian.Uint64(b[1+13*8:])&1 != 0
	case len(b) == counterSizeV2 && b[0] == 2:
		c.inc, c.refunded, c.hold, c.alone = 0, 0, 0, false
	default:
		return false
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[1+8*i:]) }
	c.epoch = u(0)
	c.cum = int64(u(1))
	c.at = int64(u(2))
	c.unrefilled = math.Float64frombits(u(3))
	c.demand = math.Float64frombits(u(4))
	c.reserved = math.Float64frombits(u(5))
	c.level = math.Float64frombits(u(6))
	c.spec = limiter.Spec{Limit: int64(u(7)), Per: time.Duration(u(8)), Burst: int64(u(9))}
	return c.cum >= 0 && c.hold >= 0 && c.refunded >= 0 && c.refunded <= c.cum && !math.IsNaN(c.unrefilled) && !math.IsNaN(c.demand) && !math.IsNaN(c.reserved) &&
		!math.IsNaN(c.level) &&
		c.spec.Validate() == nil
}

// marshalInt encodes a version byte and one int64: heartbeats (UnixNano),
// connection counts, Strict buckets (the UnixNano at which they are full).
func marshalInt(v int64) []byte {
	return binary.LittleEndian.AppendUint64([]byte{intVersion}, uint64(v))
}

func unmarshalInt(b []byte) (int64, bool) {
	if len(b) != 9 || b[0] != intVersion {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint64(b[1:])), true
}

// rate returns the spec's refill in tokens per nanosecond.
func rate(s limiter.Spec) float64 {
	per := s.Per
	if per <= 0 {
		per = time.Minute
	}
	return float64(s.Limit) / float64(per)
}
