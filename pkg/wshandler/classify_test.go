package wshandler

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// classifyByPrefix is a Classify hook: a message starting with "t" is
// typing, "f" a file, anything else a message.
func classifyByPrefix(_ *Conn, _ int, data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte("t")):
		return "typing"
	case bytes.HasPrefix(data, []byte("f")):
		return "file"
	}
	return "message"
}

// recvText reads the next frame of c as text.
func recvText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// An OnMessage application classifies its own messages: a typing flood is
// refused by the typing class (error frame and violation naming the class
// and the layer, observed counting the class's cost) while messages from
// the same user pass, and a refused message never reaches OnMessage.
func TestClassifyTypingFloodOnMessage(t *testing.T) {
	t.Parallel()
	doc := &policy.Document{Classes: map[string]policy.Class{
		"typing":  {Cost: 2, Connection: policy.Rate{Rate: 6}},
		"message": {Connection: policy.Rate{Rate: 100}},
	}}
	var seen atomic.Int64
	onMessage := func(c *Conn, mt int, data []byte) {
		seen.Add(1)
		echo(c, mt, data)
	}
	n, viols := classNode(t, Config{OnMessage: onMessage, Classify: classifyByPrefix, MaxDenials: -1},
		limiter.Limits{}, doc)
	c := dialAs(t, n, "ada")
	for i := range 3 {
		send(t, c, "typing")
		if got := recvText(t, c); got != "typing" {
			t.Fatalf("typing %d: got %q, want the echo", i, got)
		}
	}
	send(t, c, "typing")
	classErr(t, c, "typing", "connection")
	for i := range 5 {
		send(t, c, "hello")
		if got := recvText(t, c); got != "hello" {
			t.Fatalf("message %d: got %q, want the echo", i, got)
		}
	}
	if got := seen.Load(); got != 8 {
		t.Errorf("OnMessage saw %d messages, want 8 (the refused one never)", got)
	}
	viols.mu.Lock()
	defer viols.mu.Unlock()
	if len(viols.vs) != 1 {
		t.Fatalf("violations %+v, want one class_rate", viols.vs)
	}
	v := viols.vs[0]
	if v.Type != limiter.ViolationClassRate || v.Class != "typing" || v.Layer != "connection" || v.Room != "" {
		t.Errorf("violation %+v, want class_rate of typing by the connection layer", v)
	}
	e := events.FromViolation(v)
	if e.Class != "typing" || e.Layer != "connection" || e.Limit != 6 || e.Observed != 8 {
		t.Errorf("event %+v: want class typing, layer connection, limit 6, observed 8 (6 taken + cost 2)", e)
	}
	if st := n.h.Limiter().Statistics(); st.Denied[limiter.ReasonClassRateExceeded] != 1 || st.TotalMessages != 8 {
		t.Errorf("statistics %+v: want 1 class denial and 8 messages (the refused one refunded)", st)
	}
}

// A client cannot send a frame of a type only the server makes, even when
// the policy has a class of that name: it is refused as unknown_type and
// relayed to nobody.
func TestServerFrameTypesAreNeverClasses(t *testing.T) {
	t.Parallel()
	doc := &policy.Document{Classes: map[string]policy.Class{
		"joined":  {Connection: policy.Rate{Rate: 100}},
		"left":    {Connection: policy.Rate{Rate: 100}},
		"error":   {Connection: policy.Rate{Rate: 100}},
		"message": {Connection: policy.Rate{Rate: 100}},
	}}
	n, _ := classNode(t, Config{}, limiter.Limits{}, doc)
	a, b := dialAs(t, n, "ada"), dialAs(t, n, "bob")
	join(t, a, "lobby")
	join(t, b, "lobby")
	for _, typ := range []string{"joined", "left", "error"} {
		send(t, a, map[string]any{"type": typ, "room": "lobby", "id": "f1", "data": map[string]string{"connection": "x"}})
		if r := recv(t, a); r.Error != CodeUnknownType || r.ID != "f1" {
			t.Errorf("%s from a client: got %+v, want unknown_type", typ, r)
		}
	}
	send(t, a, msg("lobby", "hi"))
	if r := recv(t, b); r.Type != TypeMessage || string(r.Data) != `"hi"` {
		t.Errorf("bob's next frame is %+v, want the message (no forged frame before it)", r)
	}
}

// A KeyFunc error wrapping ErrUnauthenticated refuses with 401 (or 1008
// "unauthenticated" with RejectWithClose); any other error keeps 400.
func TestKeyFuncUnauthenticated(t *testing.T) {
	t.Parallel()
	unauth := func(*http.Request) (string, error) {
		return "", fmt.Errorf("token expired: %w", ErrUnauthenticated)
	}
	other := func(*http.Request) (string, error) { return "", errors.New("no header") }

	n := newNode(t, Config{OnMessage: echo, KeyFunc: unauth}, limiter.Limits{})
	resp, err := dialErr(t, n)
	status, _, body := rejection(t, resp, err)
	if status != http.StatusUnauthorized || body.Error != CodeUnauthenticated || resp.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Errorf("got %d %+v %q, want 401 unauthenticated with a Bearer challenge", status, body, resp.Header.Get("WWW-Authenticate"))
	}
	if got := n.h.Stats().Rejected; got != 1 {
		t.Errorf("Rejected %d, want 1", got)
	}

	n = newNode(t, Config{OnMessage: echo, KeyFunc: other}, limiter.Limits{})
	resp, err = dialErr(t, n)
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("got %v %v, want 400", resp, err)
	}
	resp.Body.Close()

	n = newNode(t, Config{OnMessage: echo, KeyFunc: unauth, RejectWithClose: true}, limiter.Limits{})
	c := dial(t, n)
	if r := recv(t, c); r.Error != CodeUnauthenticated {
		t.Errorf("got %+v, want an unauthenticated error frame", r)
	}
	if ce := closeCode(t, c); ce.Code != websocket.ClosePolicyViolation || ce.Text != "unauthenticated" {
		t.Errorf("close %d %q, want 1008 unauthenticated", ce.Code, ce.Text)
	}
}

// livePolicy is a PolicySource whose version a test replaces.
type livePolicy struct {
	v atomic.Pointer[policy.Version]
}

func (p *livePolicy) Current() *policy.Version { return p.v.Load() }

func (p *livePolicy) set(t testing.TB, doc *policy.Document, rev uint64) {
	t.Helper()
	tab, err := policy.Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	p.v.Store(&policy.Version{Revision: rev, Document: doc, Table: tab})
}

// The read limit of a connection is its tier's max_message_size, and
// follows a new policy version from the next message: a free client is
// closed with 1009 by a message a pro client may send, until the policy
// lowers pro's size too.
func TestReadLimitFollowsTier(t *testing.T) {
	t.Parallel()
	doc := func(pro int64) *policy.Document {
		return &policy.Document{Limits: policy.Limits{MaxMessageSize: 100},
			Tiers: map[string]policy.Tier{"pro": {Limits: &policy.Limits{MaxMessageSize: pro}}}}
	}
	pol := &livePolicy{}
	pol.set(t, doc(1000), 1)
	cfg := Config{OnMessage: echo, Policy: pol, Metadata: func(r *http.Request) map[string]string {
		return map[string]string{limiter.MetaTier: r.URL.Query().Get("tier")}
	}}
	s := &sink{}
	lc := limiter.Config{Limits: limiter.Limits{MaxMessageSize: 1000}, Sink: s,
		Tiers: map[string]limiter.Limits{"pro": {MaxMessageSize: 1000}}}
	n, _ := roomNodeWith(t, cfg, lc)
	pro, free := dialAs(t, n, "grace&tier=pro"), dialAs(t, n, "ada")
	big := strings.Repeat("x", 500)
	send(t, pro, big)
	if got := recvText(t, pro); got != big {
		t.Fatalf("pro's 500 bytes: got %d bytes back", len(got))
	}
	send(t, free, big)
	if ce := closeCode(t, free); ce.Code != websocket.CloseMessageTooBig {
		t.Errorf("free's 500 bytes: close %d, want 1009", ce.Code)
	}
	pol.set(t, doc(200), 2)
	send(t, pro, "x") // read under the old limit; the next read has the new one
	if got := recvText(t, pro); got != "x" {
		t.Fatalf("got %q, want x", got)
	}
	send(t, pro, big)
	if ce := closeCode(t, pro); ce.Code != websocket.CloseMessageTooBig {
		t.Errorf("pro's 500 bytes under the new policy: close %d, want 1009", ce.Code)
	}
	waitFor(t, ioTimeout, "the two message_size violations", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.vs) == 2
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	// Each is reported once its connection's drain ends, in either order.
	got := map[string]int64{s.vs[0].ClientID: s.vs[0].Limit, s.vs[1].ClientID: s.vs[1].Limit}
	if got["ada"] != 100 || got["grace"] != 200 {
		t.Errorf("violations report limits %v, want ada 100 and grace 200 (the tiers' read limits)", got)
	}
}
