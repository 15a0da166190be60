package policy

import (
	"sort"
	"strings"

	"github.com/ratethrottle/ratethrottle/internal/glob"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// Layer names whom a class bucket belongs to.
type Layer uint8

// The layers of a class, in the order a message is checked.
const (
	LayerConnection Layer = iota // one bucket per connection
	LayerUser                    // one per signed-in user, across connections and nodes
	LayerAddress                 // one per client address, signed in or not
	LayerRoom                    // one per room, all members together
	NumLayers                    // the number of layers
)

var layerNames = [NumLayers]string{"connection", "user", "address", "room"}

// String returns "connection", "user", "address" or "room". These values
// are stable: a denial names its layer with them.
func (l Layer) String() string {
	if l < NumLayers {
		return layerNames[l]
	}
	return "unknown"
}

// ClassID is a class's index in a Table, stable for the Table's life.
type ClassID int32

// NoClass is the ClassID of a message whose class the document does not
// define when it has no default class: only the connection limits apply.
const NoClass ClassID = -1

// linearMax is the class count up to which Table.Class compares names one
// by one instead of hashing; a few string compares beat a map lookup.
const linearMax = 8

// ClassLimits are a class's effective limits in one tier.
type ClassLimits struct {
	// Name is the class's name.
	Name string
	// Cost is the tokens one message takes from each bucket, at least 1.
	Cost int64
	// Specs are the buckets per layer; an unlimited Spec (Limit 0) means
	// the layer does not limit the class.
	Specs [NumLayers]limiter.Spec
}

// Resolved is the effective policy of one tier: connection limits and the
// limits of every class, indexed by ClassID.
type Resolved struct {
	// Tier is the tier's name; empty for the document's own limits.
	Tier string
	// Limits are the connection limits.
	Limits limiter.Limits
	// Classes are the class limits by ClassID.
	Classes []ClassLimits
}

// Class returns the limits of class id, or nil for NoClass or an id out of
// range. It allocates nothing.
func (r *Resolved) Class(id ClassID) *ClassLimits {
	if id < 0 || int(id) >= len(r.Classes) {
		return nil
	}
	return &r.Classes[id]
}

// RoomRule is a compiled room rule.
type RoomRule struct {
	// Pattern is the rule's key in the document.
	Pattern string
	// Room is the rule as written.
	Room  Room
	specs []limiter.Spec // by ClassID; Limit 0 where the rule sets none
	set   []bool
}

// ClassSpec returns the room bucket of class id in the rooms of the rule
// for tier r: the rule's own if it sets one for the class, else the
// class's Room layer. It allocates nothing; a nil rule uses the class's.
func (rr *RoomRule) ClassSpec(r *Resolved, id ClassID) limiter.Spec {
	if rr != nil && id >= 0 && int(id) < len(rr.set) && rr.set[id] {
		return rr.specs[id]
	}
	if c := r.Class(id); c != nil {
		return c.Specs[LayerRoom]
	}
	return limiter.Spec{}
}

// Table is a compiled, read-only Document: class lookup by name and the
// resolved limits of every tier, computed once. A Table is safe for
// concurrent use; a new policy version is a new Table.
type Table struct {
	doc     Document
	names   []string // class names by ClassID, sorted
	index   map[string]ClassID
	def     ClassID
	base    *Resolved
	tiers   map[string]*Resolved
	defTier *Resolved
	exact   map[string]*RoomRule
	globs   []*RoomRule // longest pattern first
	star    *RoomRule
}

// Compile validates d and builds its Table. The Table keeps a copy of d's
// top-level struct; d's maps must not change afterwards.
func Compile(d *Document) (*Table, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	t := &Table{doc: *d, index: make(map[string]ClassID, len(d.Classes)), def: NoClass,
		tiers: make(map[string]*Resolved, len(d.Tiers)), exact: map[string]*RoomRule{}}
	t.names = sorted(d.Classes)
	for i, n := range t.names {
		t.index[n] = ClassID(i)
	}
	if d.DefaultClass != "" {
		t.def = t.index[d.DefaultClass]
	}
	t.base = t.resolve("", d.Limits, nil)
	for name, tier := range d.Tiers {
		lim := d.Limits
		if tier.Limits != nil {
			lim = *tier.Limits
		}
		t.tiers[name] = t.resolve(name, lim, tier.Classes)
	}
	t.defTier = t.base
	if d.DefaultTier != "" {
		t.defTier = t.tiers[d.DefaultTier]
	}
	for pat, room := range d.Rooms {
		rr := &RoomRule{Pattern: pat, Room: room, specs: make([]limiter.Spec, len(t.names)), set: make([]bool, len(t.names))}
		for cn, r := range room.Classes {
			id := t.index[cn]
			rr.specs[id], rr.set[id] = r.Spec(), true
		}
		switch {
		case pat == "*":
			t.star = rr
		case strings.Contains(pat, "*"):
			t.globs = append(t.globs, rr)
		default:
			t.exact[pat] = rr
		}
	}
	sort.Slice(t.globs, func(i, j int) bool {
		a, b := t.globs[i].Pattern, t.globs[j].Pattern
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	return t, nil
}

func (t *Table) resolve(tier string, lim Limits, over map[string]Class) *Resolved {
	r := &Resolved{Tier: tier, Limits: lim.Limiter(), Classes: make([]ClassLimits, len(t.names))}
	for i, name := range t.names {
		base := t.doc.Classes[name]
		c := base
		if o, ok := over[name]; ok {
			c = o
			if c.Cost == 0 {
				c.Cost = base.Cost
			}
		}
		cl := ClassLimits{Name: name, Cost: max(c.Cost, 1)}
		cl.Specs[LayerConnection] = c.Connection.Spec()
		for l, p := range [...]*Rate{LayerUser: c.User, LayerAddress: c.Address, LayerRoom: c.Room} {
			if p != nil {
				cl.Specs[l] = p.Spec()
			}
		}
		r.Classes[i] = cl
	}
	return r
}

// Resolve returns the effective limits of the tier named tier: the tier's
// own when the document defines it, else those of the default tier.
func (d *Document) Resolve(tier string) (*Resolved, error) {
	t, err := Compile(d)
	if err != nil {
		return nil, err
	}
	return t.Tier(tier), nil
}

// Document returns the document the Table was compiled from. It must not
// be modified.
func (t *Table) Document() *Document { return &t.doc }

// ClassNames returns the class names by ClassID.
func (t *Table) ClassNames() []string { return append([]string(nil), t.names...) }

// Class returns the ClassID of the class named name, the default class's
// if the document does not define it, or NoClass if it has no default
// class either. It allocates nothing.
func (t *Table) Class(name string) ClassID {
	if len(t.names) <= linearMax {
		for i, n := range t.names {
			if n == name {
				return ClassID(i)
			}
		}
		return t.def
	}
	if id, ok := t.index[name]; ok {
		return id
	}
	return t.def
}

// ClassBytes is Class for a name held in a byte slice, such as a frame's
// type field. It allocates nothing.
func (t *Table) ClassBytes(name []byte) ClassID {
	if len(t.names) <= linearMax {
		for i, n := range t.names {
			if n == string(name) {
				return ClassID(i)
			}
		}
		return t.def
	}
	if id, ok := t.index[string(name)]; ok {
		return id
	}
	return t.def
}

// Tier returns the effective limits of the tier named name, or of the
// default tier when the document defines no such tier (including the
// empty name of an anonymous client). It never returns nil and allocates
// nothing.
func (t *Table) Tier(name string) *Resolved {
	if r, ok := t.tiers[name]; ok {
		return r
	}
	return t.defTier
}

// TierNames returns the names of the tiers the document defines, sorted.
func (t *Table) TierNames() []string { return sorted(t.tiers) }

// Room returns the rule of the room named name: the rule of that exact
// name, else the longest pattern that matches, else the "*" rule; nil if
// none applies. It allocates nothing.
func (t *Table) Room(name string) *RoomRule {
	if rr, ok := t.exact[name]; ok {
		return rr
	}
	for _, rr := range t.globs {
		if glob.Match(rr.Pattern, name) {
			return rr
		}
	}
	return t.star
}

// RoomRules returns the room rules in the order Room tries them: the exact
// names (sorted), then the patterns (longest first), then the "*" rule.
// A handler that tries exact names first and then patterns in order, first
// match winning (as wshandler.Config's Rooms, RoomPatterns and DefaultRoom
// do), applies the rules as Room does.
func (t *Table) RoomRules() []*RoomRule {
	rules := make([]*RoomRule, 0, len(t.exact)+len(t.globs)+1)
	for _, name := range sorted(t.exact) {
		rules = append(rules, t.exact[name])
	}
	rules = append(rules, t.globs...)
	if t.star != nil {
		rules = append(rules, t.star)
	}
	return rules
}
