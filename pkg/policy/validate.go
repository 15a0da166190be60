package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// MaxNameLength caps the name of a class or a tier, in bytes.
const MaxNameLength = 64

// MaxRoomPatternLength caps a room rule's pattern, in bytes: the
// WebSocket handler's default cap on a room name, so that every exact name
// of a policy is one a client can join.
const MaxRoomPatternLength = 128

// MaxPer caps a bucket's refill period.
const MaxPer = 24 * time.Hour

// limitKeys maps the limiter.Limits field names in a *limiter.FieldError to
// the document's keys.
var limitKeys = map[string]string{
	"ConnectionsPerMinute":     "connections_per_minute",
	"ConnectionBurst":          "connection_burst",
	"MessagesPerMinute":        "messages_per_minute",
	"MessageBurst":             "message_burst",
	"BytesPerMinute":           "bytes_per_minute",
	"ByteBurst":                "byte_burst",
	"MaxConcurrentConnections": "max_concurrent_connections",
	"MaxMessageSize":           "max_message_size",
	"MessageScope":             "message_scope",
	"Per":                      "per",
}

// Validate checks the document and returns a *ValidationError listing every
// problem with its path, or nil.
func (d *Document) Validate() error {
	v := &validator{}
	if d.Version != 0 && d.Version != SchemaVersion {
		v.add("version", d.Version, fmt.Sprintf("unsupported; this node reads version %d", SchemaVersion))
	}
	if d.DefaultTier != "" {
		if _, ok := d.Tiers[d.DefaultTier]; !ok {
			v.add("default_tier", d.DefaultTier, "names no tier under tiers")
		}
	}
	if d.DefaultClass != "" {
		if _, ok := d.Classes[d.DefaultClass]; !ok {
			v.add("default_class", d.DefaultClass, "names no class under classes")
		}
	}
	v.limits("limits", d.Limits)
	for _, name := range sorted(d.Classes) {
		p := join("classes", name)
		v.name(p, name)
		v.class(p, d.Classes[name], 0)
	}
	for _, name := range sorted(d.Tiers) {
		p := join("tiers", name)
		v.name(p, name)
		t := d.Tiers[name]
		if t.Limits != nil {
			v.limits(join(p, "limits"), *t.Limits)
		}
		for _, cn := range sorted(t.Classes) {
			cp := join(join(p, "classes"), cn)
			base, ok := d.Classes[cn]
			if !ok {
				v.add(cp, nil, "names no class under classes")
				continue
			}
			v.class(cp, t.Classes[cn], base.Cost)
		}
	}
	for _, pat := range sorted(d.Rooms) {
		v.room(join("rooms", pat), pat, d.Rooms[pat], d.Classes)
	}
	if len(v.probs) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.probs}
}

type validator struct{ probs []*limiter.FieldError }

func (v *validator) add(path string, value any, reason string) {
	v.probs = append(v.probs, problem(path, value, reason))
}

func (v *validator) name(path, name string) {
	if name == "" || len(name) > MaxNameLength {
		v.add(path, nil, fmt.Sprintf("the name must be 1 to %d bytes", MaxNameLength))
		return
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			v.add(path, nil, "the name may hold only letters, digits, '_', '-' and '.'")
			return
		}
	}
}

func (v *validator) limits(path string, l Limits) {
	if l.MessageScope != "" && l.MessageScope != "connection" && l.MessageScope != "client" {
		v.add(join(path, "message_scope"), l.MessageScope, `must be "connection" or "client"`)
		return
	}
	var fe *limiter.FieldError
	if err := l.Limiter().Validate(); errors.As(err, &fe) {
		v.add(join(path, limitKeys[fe.Field]), fe.Value, fe.Reason)
	}
}

// rate checks one bucket and returns its capacity (0 when unlimited or
// invalid).
func (v *validator) rate(path string, r Rate, inline bool) int64 {
	p := func(k string) string { return join(path, k) }
	n := len(v.probs)
	switch {
	case r.Rate < 0:
		v.add(p("rate"), r.Rate, "must not be negative (0 means unlimited)")
	case r.Burst < 0:
		v.add(p("burst"), r.Burst, "must not be negative (0 means equal to the rate)")
	case r.Per < 0:
		v.add(p("per"), r.Per, "must not be negative (0 means one minute)")
	case r.Per > MaxPer:
		v.add(p("per"), r.Per, fmt.Sprintf("must not exceed %v", MaxPer))
	case r.Rate == 0 && r.Burst != 0:
		v.add(p("burst"), r.Burst, "is set but the rate is 0 (unlimited)")
	case r.Rate == 0 && r.Per != 0:
		v.add(p("per"), r.Per, "is set but the rate is 0 (unlimited)")
	case r.Rate == 0 && !inline:
		v.add(p("rate"), r.Rate, "must be positive; leave the layer out to leave it unlimited")
	}
	if len(v.probs) > n || r.Rate == 0 {
		return 0
	}
	return r.Spec().Capacity()
}

// class checks a class entry; baseCost is the cost it inherits when its
// own is zero (0 for the document's own entries, meaning 1).
func (v *validator) class(path string, c Class, baseCost int64) {
	cost := c.Cost
	if cost == 0 {
		cost = max(baseCost, 1)
	}
	if c.Cost < 0 {
		v.add(join(path, "cost"), c.Cost, "must not be negative (0 means 1)")
		cost = 1
	}
	layers := []struct {
		name string
		r    *Rate
	}{{"", &c.Connection}, {"user", c.User}, {"address", c.Address}, {"room", c.Room}}
	for _, l := range layers {
		if l.r == nil {
			continue
		}
		lp := join(path, l.name)
		if l.name == "" {
			lp = path
		}
		if capacity := v.rate(lp, *l.r, l.name == ""); capacity > 0 && cost > capacity {
			v.add(join(path, "cost"), cost, fmt.Sprintf("exceeds the burst %d of %s, so no message of the class could pass", capacity, lp))
		}
	}
}

func (v *validator) room(path, pattern string, r Room, classes map[string]Class) {
	switch {
	case pattern == "":
		v.add(path, nil, "the pattern must not be empty")
	case len(pattern) > MaxRoomPatternLength:
		v.add(path, nil, fmt.Sprintf("the pattern must be at most %d bytes", MaxRoomPatternLength))
	case !utf8.ValidString(pattern) || strings.ContainsFunc(pattern, unicode.IsControl):
		v.add(path, nil, "the pattern must be UTF-8 without control characters")
	}
	for _, f := range []struct {
		key string
		n   int64
	}{{"max_members", r.MaxMembers}, {"messages_per_minute", r.MessagesPerMinute}, {"message_burst", r.MessageBurst},
		{"member_messages_per_minute", r.MemberMessagesPerMinute}, {"member_message_burst", r.MemberMessageBurst},
		{"max_message_size", r.MaxMessageSize}} {
		if f.n < 0 {
			v.add(join(path, f.key), f.n, "must not be negative (0 means unlimited)")
		}
	}
	if r.MessagesPerMinute == 0 && r.MessageBurst > 0 {
		v.add(join(path, "message_burst"), r.MessageBurst, "is set but messages_per_minute is 0 (unlimited)")
	}
	if r.MemberMessagesPerMinute == 0 && r.MemberMessageBurst > 0 {
		v.add(join(path, "member_message_burst"), r.MemberMessageBurst, "is set but member_messages_per_minute is 0 (unlimited)")
	}
	for _, cn := range sorted(r.Classes) {
		cp := join(join(path, "classes"), cn)
		c, ok := classes[cn]
		if !ok {
			v.add(cp, nil, "names no class under classes")
			continue
		}
		cost := max(c.Cost, 1)
		if capacity := v.rate(cp, r.Classes[cn], false); capacity > 0 && cost > capacity {
			v.add(cp+".burst", capacity, fmt.Sprintf("is below the class's cost %d, so no message of the class could pass", cost))
		}
	}
}

func sorted[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
