package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// TestSubjectsOfHostileClients checks that no client ID, however hostile,
// changes the shape of an event subject: the client is always its last
// token, subject.Token of the ID (whose own properties pkg/subject tests).
func TestSubjectsOfHostileClients(t *testing.T) {
	t.Parallel()
	ids := []string{
		"", " ", "a", "1.2.3.4", "::1", "[2001:db8::1]:443", "a.b", "*", ">", "a b\tc\n",
		"user.*.>", "日本語", "émoji-🙂", strings.Repeat("x", 48), strings.Repeat("x", 49),
		strings.Repeat("long.id*>", 1200), // about 10 KB
		"=", "\x00", "$KV.x",
	}
	for _, id := range ids {
		for _, c := range []struct {
			subj string
			n    int
		}{
			{events.Subjects{}.Violation(events.TypeMessageRate, id), 4},
			{events.Subjects{Prefix: "prod"}.Ban(id), 3},
		} {
			toks := strings.Split(c.subj, ".")
			if last := toks[len(toks)-1]; len(toks) != c.n || last != subject.Token(id) {
				t.Errorf("subject %q for %.20q: %d tokens ending in %q, want %d ending in %q", c.subj, id, len(toks), last, c.n, subject.Token(id))
			}
		}
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	var def events.Subjects
	tok := subject.Token("10.0.0.1")
	cases := []struct{ got, want string }{
		{def.Violation(events.TypeMessageRate, "10.0.0.1"), "ratethrottle.violations.message_rate." + tok},
		{def.Ban("10.0.0.1"), "ratethrottle.bans." + tok},
		{def.AllViolations(), "ratethrottle.violations.>"},
		{def.ViolationsOfType(events.TypeBandwidth), "ratethrottle.violations.bandwidth.*"},
		{def.ViolationsOfClient("10.0.0.1"), "ratethrottle.violations.*." + tok},
		{def.AllBans(), "ratethrottle.bans.*"},
		{events.Subjects{Prefix: "prod.rt"}.Violation(events.TypeRoomFull, "10.0.0.1"), "prod.rt.violations.room_full." + tok},
		{def.Violation("odd.type*", "x"), "ratethrottle.violations.=b2RkLnR5cGUq." + subject.Token("x")},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "ratethrottle", "prod.ratethrottle", "a-b_c"} {
		if err := events.ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{".", "a.", ".a", "a..b", "a b", "a.*", "a.>", "rt>"} {
		err := events.ValidatePrefix(p)
		wantFieldError(t, fmt.Sprintf("ValidatePrefix(%q)", p), err, "Prefix")
	}
}

func TestFilterSubjects(t *testing.T) {
	t.Parallel()
	tok := subject.Token("c 1")
	cases := []struct {
		f    events.Filter
		want []string
	}{
		{events.Filter{}, []string{"ratethrottle.bans.*", "ratethrottle.violations.*.*"}},
		{events.Filter{Types: []events.Type{events.TypeMessageRate}}, []string{"ratethrottle.violations.message_rate.*"}},
		{events.Filter{Types: []events.Type{events.TypeBan, events.TypeUnban}}, []string{"ratethrottle.bans.*"}},
		{events.Filter{Clients: []string{"c 1"}}, []string{"ratethrottle.bans." + tok, "ratethrottle.violations.*." + tok}},
		{events.Filter{Prefix: "p", Types: []events.Type{events.TypeBandwidth, events.TypeBan}, Clients: []string{"c 1"}},
			[]string{"p.bans." + tok, "p.violations.bandwidth." + tok}},
	}
	for _, c := range cases {
		got, err := c.f.Subjects()
		if err != nil || strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%+v.Subjects() = %v, %v; want %v", c.f, got, err, c.want)
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		v                    limiter.Violation
		wantObserved, wantMS int64
	}{
		{limiter.Violation{Type: limiter.ViolationConnectionRate, Limit: 10, Remaining: 0, RetryAfter: 6 * time.Second}, 11, 6000},
		{limiter.Violation{Type: limiter.ViolationConcurrentConnections, Limit: 2, Current: 2}, 2, 0},
		{limiter.Violation{Type: limiter.ViolationMessageSize, Limit: 1024, Current: 4096, Size: 4096, RetryAfter: limiter.Never}, 4096, -1},
		{limiter.Violation{Type: limiter.ViolationBandwidth, Limit: 1000, Remaining: 100, Size: 300, RetryAfter: 1500 * time.Microsecond}, 1200, 2},
		{limiter.Violation{Type: limiter.ViolationBanned, RetryAfter: time.Minute}, 0, 60000},
	}
	for _, c := range cases {
		c.v.Time, c.v.ClientID = t0, "client"
		e := events.FromViolation(c.v)
		if e.Observed != c.wantObserved || e.RetryAfterMS != c.wantMS {
			t.Errorf("%s: observed %d retry %d, want %d %d", c.v.Type, e.Observed, e.RetryAfterMS, c.wantObserved, c.wantMS)
		}
		data, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		var raw map[string]any
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"v", "id", "time", "node", "type", "reason", "client", "connection", "room", "limit", "observed", "retry_after_ms", "metadata"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("%s: field %q missing from %s", c.v.Type, k, data)
			}
		}
		back, err := events.Decode(data)
		if err != nil || back.Type != e.Type || !back.Time.Equal(t0) || back.Observed != e.Observed {
			t.Errorf("%s: Decode = %+v, %v", c.v.Type, back, err)
		}
	}
	if _, err := events.Decode([]byte(`{"v":2,"type":"x"}`)); !errors.Is(err, events.ErrUnsupportedVersion) {
		t.Errorf("Decode v2 = %v, want ErrUnsupportedVersion", err)
	}
	if _, err := events.Decode([]byte(`not json`)); err == nil {
		t.Error("Decode of garbage succeeded")
	}
}
