package main

import (
	"sync/atomic"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// violationTypes are the types violationCounter counts, in a stable order.
var violationTypes = []limiter.ViolationType{
	limiter.ViolationConnectionRate, limiter.ViolationConcurrentConnections,
	limiter.ViolationMessageSize, limiter.ViolationMessageRate, limiter.ViolationBandwidth,
	limiter.ViolationBanned, limiter.ViolationStoreUnavailable,
	limiter.ViolationRoomRate, limiter.ViolationRoomFull,
}

// violationCounter is a limiter.ViolationSink that counts this node's
// violations by type, the room layers' included. It allocates nothing.
type violationCounter struct {
	counts [16]atomic.Int64
	other  atomic.Int64
}

// HandleViolation implements limiter.ViolationSink.
func (c *violationCounter) HandleViolation(v limiter.Violation) {
	for i, t := range violationTypes {
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
	for i, t := range violationTypes {
		if v := c.counts[i].Load(); v > 0 {
			m[string(t)] = v
		}
	}
	if v := c.other.Load(); v > 0 {
		m["other"] = v
	}
	return m
}
