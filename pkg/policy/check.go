package policy

import (
	"context"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// layerKinds are the kinds under which class buckets live in a
// limiter.Store; Key.Scope is the class name and Key.ID the connection,
// user, address or room.
var layerKinds = [NumLayers]limiter.Kind{"class_conn", "class_user", "class_addr", "class_room"}

// Kind returns the limiter.Kind of the layer's buckets.
func (l Layer) Kind() limiter.Kind {
	if l < NumLayers {
		return layerKinds[l]
	}
	return ""
}

// Subject names the buckets one message is taken from, by layer. An empty
// ID skips its layer: User is empty for an anonymous client, Room outside
// a room.
type Subject struct {
	Connection string
	User       string
	Address    string
	Room       string
}

func (s *Subject) id(l Layer) string {
	switch l {
	case LayerConnection:
		return s.Connection
	case LayerUser:
		return s.User
	case LayerAddress:
		return s.Address
	}
	return s.Room
}

// Denial says which class and layer refused a message, and how long the
// same message would have to wait.
type Denial struct {
	Class      string
	Layer      Layer
	Limit      int64
	Remaining  int64
	RetryAfter time.Duration
}

// Checker takes a message's class tokens from every layer. Per-connection
// buckets go to Local (they never need to leave the node); the user,
// address and room buckets go to Shared, which a cluster store makes
// cluster-wide. Local nil means Shared.
type Checker struct {
	Local  limiter.Store
	Shared limiter.Store
}

// Take takes the cost of one message of class id from each layer's bucket
// for sub at now, in layer order, all or nothing: when a layer refuses,
// what the earlier layers took is given back. It returns ok, or the
// Denial naming the class and the layer that refused. rule is the room's
// rule (Table.Room), nil outside a room or when no rule applies. NoClass
// takes nothing. A store error ends the check, the earlier layers
// refunded.
//
// Take allocates nothing when the stores do not.
func (c *Checker) Take(ctx context.Context, r *Resolved, rule *RoomRule, id ClassID, sub Subject, now time.Time) (Denial, bool, error) {
	cl := r.Class(id)
	if cl == nil {
		return Denial{}, true, nil
	}
	specs := cl.Specs
	specs[LayerRoom] = rule.ClassSpec(r, id)
	for l := Layer(0); l < NumLayers; l++ {
		spec, key := specs[l], sub.id(l)
		if spec.Unlimited() || key == "" {
			continue
		}
		res, err := c.store(l).Take(ctx, limiter.Key{Kind: layerKinds[l], Scope: cl.Name, ID: key}, spec, now, cl.Cost)
		if err != nil || !res.OK {
			c.refund(ctx, cl, &specs, &sub, l, now)
			if err != nil {
				return Denial{}, false, err
			}
			return Denial{Class: cl.Name, Layer: l, Limit: spec.Limit, Remaining: res.Remaining, RetryAfter: res.RetryAfter}, false, nil
		}
	}
	return Denial{}, true, nil
}

// Refund gives back what an allowed Take took, for a caller whose own
// later check denies the message.
func (c *Checker) Refund(ctx context.Context, r *Resolved, rule *RoomRule, id ClassID, sub Subject, now time.Time) {
	cl := r.Class(id)
	if cl == nil {
		return
	}
	specs := cl.Specs
	specs[LayerRoom] = rule.ClassSpec(r, id)
	c.refund(ctx, cl, &specs, &sub, NumLayers, now)
}

// refund gives back the layers before upto.
func (c *Checker) refund(ctx context.Context, cl *ClassLimits, specs *[NumLayers]limiter.Spec, sub *Subject, upto Layer, now time.Time) {
	for l := Layer(0); l < upto; l++ {
		spec, key := specs[l], sub.id(l)
		if spec.Unlimited() || key == "" {
			continue
		}
		_ = c.store(l).Refund(ctx, limiter.Key{Kind: layerKinds[l], Scope: cl.Name, ID: key}, spec, now, cl.Cost)
	}
}

func (c *Checker) store(l Layer) limiter.Store {
	if l == LayerConnection && c.Local != nil {
		return c.Local
	}
	return c.Shared
}
