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
	for l := Layer(0); l < NumLayers; l++ {
		spec, key := cl.layerSpec(l, r, rule, id), sub.id(l)
		if spec.Unlimited() || key == "" {
			continue
		}
		res, err := c.store(l).Take(ctx, limiter.Key{Kind: layerKinds[l], Scope: cl.Name, ID: key}, spec, now, cl.Cost)
		if err != nil || !res.OK {
			c.refund(ctx, r, rule, id, cl, &sub, l, now)
			if err != nil {
				return Denial{}, false, err
			}
			return Denial{Class: cl.Name, Layer: l, Limit: spec.Limit, Remaining: res.Remaining, RetryAfter: res.RetryAfter}, false, nil
		}
	}
	return Denial{}, true, nil
}

// layerSpec returns the Spec of cl's bucket in layer l: the room rule's,
// if it sets one, for the room layer (see RoomRule.ClassSpec). cl is
// r.Class(id).
func (cl *ClassLimits) layerSpec(l Layer, r *Resolved, rule *RoomRule, id ClassID) limiter.Spec {
	if l == LayerRoom && rule != nil {
		return rule.ClassSpec(r, id)
	}
	return cl.Specs[l]
}

// Refund gives back what an allowed Take took, for a caller whose own
// later check denies the message.
func (c *Checker) Refund(ctx context.Context, r *Resolved, rule *RoomRule, id ClassID, sub Subject, now time.Time) {
	if cl := r.Class(id); cl != nil {
		c.refund(ctx, r, rule, id, cl, &sub, NumLayers, now)
	}
}

// refund gives back the layers before upto; cl is r.Class(id).
func (c *Checker) refund(ctx context.Context, r *Resolved, rule *RoomRule, id ClassID, cl *ClassLimits, sub *Subject, upto Layer, now time.Time) {
	for l := Layer(0); l < upto; l++ {
		spec, key := cl.layerSpec(l, r, rule, id), sub.id(l)
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
