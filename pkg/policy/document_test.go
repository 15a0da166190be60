package policy

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func readExample(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/example.yaml")
	require.NoError(t, err)
	return b
}

func TestParseExample(t *testing.T) {
	doc, err := Parse(readExample(t))
	require.NoError(t, err)
	require.Equal(t, "free", doc.DefaultTier)
	require.Equal(t, 10*time.Second, doc.Classes["typing"].Connection.Per)
	require.Equal(t, int64(10), doc.Classes["file"].Cost)
	require.Equal(t, &Rate{Rate: 120, Burst: 20}, doc.Classes["message"].User)

	// Marshal and Parse again: the same document.
	out, err := Marshal(doc)
	require.NoError(t, err)
	again, err := Parse(out)
	require.NoError(t, err, "%s", out)
	require.Equal(t, doc, again)
	require.Contains(t, string(out), "per: 10s")
}

// The example in docs/POLICY.md is the tested one.
func TestExampleInDocs(t *testing.T) {
	b, err := os.ReadFile("../../docs/POLICY.md")
	require.NoError(t, err)
	require.Contains(t, string(b), string(readExample(t)))
}

func TestResolveTiers(t *testing.T) {
	doc, err := Parse(readExample(t))
	require.NoError(t, err)
	tab, err := Compile(doc)
	require.NoError(t, err)

	free, pro := tab.Tier("free"), tab.Tier("pro")
	require.Same(t, free, tab.Tier(""), "anonymous: the default tier")
	require.Same(t, free, tab.Tier("platinum"), "unknown tier: the default tier")
	require.Equal(t, int64(30), free.Limits.ConnectionsPerMinute)
	require.Equal(t, int64(120), pro.Limits.ConnectionsPerMinute)

	msg, typing, file := tab.Class("message"), tab.Class("typing"), tab.Class("file")
	require.Equal(t, []string{"file", "message", "typing"}, tab.ClassNames())
	require.Equal(t, msg, tab.Class("no-such-type"), "the default class")

	m := pro.Class(msg)
	require.Equal(t, limiter.Spec{Limit: 300, Burst: 50}, m.Specs[LayerConnection])
	require.Equal(t, limiter.Spec{Limit: 600, Burst: 100}, m.Specs[LayerUser])
	require.True(t, m.Specs[LayerAddress].Unlimited(), "a tier's class entry replaces every layer")
	require.Equal(t, limiter.Spec{Limit: 300, Burst: 30}, free.Class(msg).Specs[LayerAddress])

	require.Equal(t, int64(10), pro.Class(file).Cost, "a tier entry without cost keeps the class's")
	require.Equal(t, limiter.Spec{Limit: 600, Burst: 100}, pro.Class(file).Specs[LayerConnection])
	// typing is not overridden by pro: the document's entry.
	require.Equal(t, free.Class(typing), pro.Class(typing))
	require.Equal(t, limiter.Spec{Limit: 20, Burst: 5, Per: 10 * time.Second}, pro.Class(typing).Specs[LayerConnection])
	require.Equal(t, int64(1), pro.Class(typing).Cost)

	r, err := doc.Resolve("pro")
	require.NoError(t, err)
	require.Equal(t, pro, r)
	require.Nil(t, pro.Class(NoClass))
}

func TestNoDefaultClassAndNoTiers(t *testing.T) {
	tab, err := Compile(&Document{Limits: Limits{MessagesPerMinute: 10},
		Classes: map[string]Class{"chat": {Connection: Rate{Rate: 5}}}})
	require.NoError(t, err)
	require.Equal(t, NoClass, tab.Class("typing"))
	require.Equal(t, NoClass, tab.ClassBytes([]byte("typing")))
	require.Equal(t, ClassID(0), tab.ClassBytes([]byte("chat")))
	r := tab.Tier("pro")
	require.Equal(t, "", r.Tier)
	require.Equal(t, int64(10), r.Limits.MessagesPerMinute)
	require.Empty(t, tab.TierNames())
}

func TestManyClassesUseTheIndex(t *testing.T) {
	doc := &Document{Classes: map[string]Class{}, DefaultClass: "c00"}
	for i := range 20 {
		doc.Classes[string(rune('a'+i))+"x"] = Class{Connection: Rate{Rate: int64(i + 1)}}
	}
	doc.Classes["c00"] = Class{}
	tab, err := Compile(doc)
	require.NoError(t, err)
	for i, n := range tab.ClassNames() {
		require.Equal(t, ClassID(i), tab.Class(n))
		require.Equal(t, ClassID(i), tab.ClassBytes([]byte(n)))
	}
	require.Equal(t, tab.Class("c00"), tab.Class("zzz"))
}

func TestRooms(t *testing.T) {
	doc, err := Parse(readExample(t))
	require.NoError(t, err)
	tab, err := Compile(doc)
	require.NoError(t, err)
	for room, want := range map[string]string{
		"lobby": "lobby", "support-42": "support-*", "support-": "support-*",
		"game": "*", "lobby2": "*", "": "*",
	} {
		require.Equal(t, want, tab.Room(room).Pattern, room)
	}
	free, msg, typing := tab.Tier("free"), tab.Class("message"), tab.Class("typing")
	require.Equal(t, limiter.Spec{Limit: 1200, Burst: 100}, tab.Room("lobby").ClassSpec(free, msg), "the room rule's own")
	require.Equal(t, limiter.Spec{Limit: 600, Burst: 60}, tab.Room("game").ClassSpec(free, msg), "the class's room layer")
	require.True(t, tab.Room("lobby").ClassSpec(free, typing).Unlimited())
	var none *RoomRule
	require.Equal(t, limiter.Spec{Limit: 600, Burst: 60}, none.ClassSpec(free, msg))
	require.True(t, none.ClassSpec(free, NoClass).Unlimited())

	tab2, err := Compile(&Document{Rooms: map[string]Room{"a*": {}, "a*b*": {}}})
	require.NoError(t, err)
	require.Equal(t, "a*b*", tab2.Room("axxbyy").Pattern, "the longest pattern wins")
	require.Equal(t, "a*", tab2.Room("axx").Pattern)
	require.Nil(t, tab2.Room("b"))

	tab3, err := Compile(&Document{Rooms: map[string]Room{"*": {}, "b": {}, "a*": {}, "a*b*": {}, "a": {}}})
	require.NoError(t, err)
	var order []string
	for _, rr := range tab3.RoomRules() {
		order = append(order, rr.Pattern)
	}
	require.Equal(t, []string{"a", "b", "a*b*", "a*", "*"}, order, "exact names, then patterns longest first, then *")
}

func TestValidationNamesThePath(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		path string
	}{
		{"negative tier class rate", `
classes: {typing: {rate: 10}}
tiers: {pro: {classes: {typing: {rate: -5}}}}`, "tiers.pro.classes.typing.rate"},
		{"unknown key deep down", `
classes: {typing: {rate: 10}}
tiers: {pro: {classes: {typing: {rat: 5}}}}`, "tiers.pro.classes.typing.rat"},
		{"unknown top-level key", `limit: {}`, "limit"},
		{"unknown limits key", `limits: {messages_per_minut: 5}`, "limits.messages_per_minut"},
		{"burst without rate", `classes: {typing: {burst: 5}}`, "classes.typing.burst"},
		{"layer with no rate", `classes: {typing: {user: {burst: 0}}}`, "classes.typing.user.rate"},
		{"cost over burst", `classes: {file: {cost: 10, rate: 60, burst: 5}}`, "classes.file.cost"},
		{"cost over a tier's burst", `
classes: {file: {cost: 10, rate: 60}}
tiers: {free: {classes: {file: {rate: 6}}}}`, "tiers.free.classes.file.cost"},
		{"tier class not declared", `tiers: {pro: {classes: {typing: {rate: 5}}}}`, "tiers.pro.classes.typing"},
		{"default tier missing", `default_tier: gold`, "default_tier"},
		{"default class missing", `default_class: chat`, "default_class"},
		{"limits", `limits: {messages_per_minute: -1}`, "limits.messages_per_minute"},
		{"tier limits", `tiers: {pro: {limits: {max_message_size: 100, bytes_per_minute: 10}}}`, "tiers.pro.limits.max_message_size"},
		{"scope", `limits: {message_scope: room}`, "limits.message_scope"},
		{"bad class name", `classes: {"a b": {}}`, "classes.a b"},
		{"room", `rooms: {lobby: {max_members: -1}}`, "rooms.lobby.max_members"},
		{"room class undeclared", `rooms: {lobby: {classes: {typing: {rate: 1}}}}`, "rooms.lobby.classes.typing"},
		{"room class per", `
classes: {typing: {}}
rooms: {lobby: {classes: {typing: {rate: 1, per: 48h}}}}`, "rooms.lobby.classes.typing.per"},
		{"room burst without rate", `rooms: {"team-*": {member_message_burst: 5}}`, "rooms.team-*.member_message_burst"},
		{"room pattern too long", `rooms: {"` + strings.Repeat("x", MaxRoomPatternLength+1) + `": {}}`, "rooms." + strings.Repeat("x", MaxRoomPatternLength+1)},
		{"room pattern empty", `rooms: {"": {max_members: 1}}`, "rooms."},
		{"room pattern control character", `rooms: {"a\tb": {}}`, "rooms.a\tb"},
		{"version", `version: 2`, "version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			require.ErrorIs(t, err, ErrInvalid)
			var ve *ValidationError
			require.True(t, errors.As(err, &ve), "%v", err)
			require.Equal(t, []string{c.path}, ve.Paths(), "%v", err)
			require.Contains(t, err.Error(), c.path)
			require.ErrorIs(t, ve.Problems[0], ErrInvalid, "a problem is a *limiter.FieldError unwrapping to ErrInvalid")
		})
	}
}

func TestValidationListsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`
classes: {a: {rate: -1}, b: {burst: 3}}
tiers: {x: {limits: {connections_per_minute: -2}}}
`))
	var ve *ValidationError
	require.True(t, errors.As(err, &ve))
	require.Equal(t, []string{"classes.a.rate", "classes.b.burst", "tiers.x.limits.connections_per_minute"}, ve.Paths())
}

func TestParseRefusesBadInput(t *testing.T) {
	for name, in := range map[string]string{
		"not yaml":      "{{{",
		"wrong type":    "limits: {messages_per_minute: lots}",
		"duplicate key": "limits: {}\nlimits: {}",
		"list not map":  "classes: [a, b]",
		"bad duration":  "classes: {a: {rate: 1, per: soon}}",
		"scalar top":    "42",
	} {
		_, err := Parse([]byte(in))
		require.ErrorIs(t, err, ErrInvalid, name)
	}
	big := make([]byte, MaxDocumentSize+1)
	_, err := Parse(big)
	require.ErrorIs(t, err, ErrInvalid)

	doc, err := Parse(nil)
	require.NoError(t, err)
	require.Equal(t, &Document{}, doc)
}

func TestJSONIsAccepted(t *testing.T) {
	doc, err := Parse([]byte(`{"default_class":"m","classes":{"m":{"rate":5,"user":{"rate":9}}}}`))
	require.NoError(t, err)
	require.Equal(t, int64(9), doc.Classes["m"].User.Rate)
}

// The messages quoted in docs/POLICY.md.
func TestErrorMessages(t *testing.T) {
	_, err := Parse([]byte("classes: {typing: {rate: 10}}\ntiers: {pro: {classes: {typing: {rate: -5}}}}"))
	require.EqualError(t, err, "policy: invalid document: tiers.pro.classes.typing.rate = -5: must not be negative (0 means unlimited)")
	_, err = Parse([]byte("classes: {typing: {rate: 10}}\ntiers:\n  pro: {classes: {typing: {rat: 5}}}"))
	require.EqualError(t, err, "policy: invalid document: tiers.pro.classes.typing.rat: unknown key (line 3); known keys: address, burst, cost, per, rate, room, user")
}

func TestParseFile(t *testing.T) {
	doc, err := ParseFile("testdata/example.yaml")
	require.NoError(t, err)
	require.Equal(t, "free", doc.DefaultTier)

	_, err = ParseFile("testdata/none.yaml")
	require.ErrorIs(t, err, os.ErrNotExist)

	bad := t.TempDir() + "/bad.yaml"
	require.NoError(t, os.WriteFile(bad, []byte("classes: {typing: {rate: -1}}"), 0o600))
	_, err = ParseFile(bad)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "bad.yaml: policy: invalid document: classes.typing.rate")
	var ve *ValidationError
	require.True(t, errors.As(err, &ve))
}

// TestLimitsRoundTrip: LimitsOf is the inverse of Limits.Limiter, for both
// message scopes.
func TestLimitsRoundTrip(t *testing.T) {
	for _, l := range []limiter.Limits{limiter.Moderate(), {MessagesPerMinute: 7, MessageBurst: 3, MessageScope: limiter.PerClient}} {
		require.Equal(t, l, LimitsOf(l).Limiter())
	}
}
