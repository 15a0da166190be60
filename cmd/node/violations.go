package main

import (
	"sync/atomic"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// violationCounter is a limiter.ViolationSink that counts this node's
// violations by type, in the order of limiter.ViolationTypes, the room
// layers' and the protocol layer's included; a type the list does not
// name is counted as "other". Counting allocates nothing.
type violationCounter struct {
	types  []limiter.ViolationType
	counts []atomic.Int64 // by types
	other  atomic.Int64
}

func newViolationCounter() *violationCounter {
	types := limiter.ViolationTypes()
	return &violationCounter{types: types, counts: make([]atomic.Int64, len(types))}
}

// HandleViolation implements limiter.ViolationSink.
func (c *violationCounter) HandleViolation(v limiter.Violation) {
	for i, t := range c.types {
		if t == v.Type {
			c.counts[i].Add(1)
			return
		}
	}
	c.other.Add(1)
}

// snapshot returns the counts by type, omitting zeros.
func (c *violationCounter) snapshot() map[string]int64 {
	m := map[string]int64{}
	for i, t := range c.types {
		if v := c.counts[i].Load(); v > 0 {
			m[string(t)] = v
		}
	}
	if v := c.other.Load(); v > 0 {
		m["other"] = v
	}
	return m
}
