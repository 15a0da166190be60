package wshandler

import (
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// joinAs joins room under name and returns the joined frame.
func joinAs(t testing.TB, c *websocket.Conn, room, name string) reply {
	t.Helper()
	send(t, c, map[string]string{"type": "join", "room": room, "name": name, "id": "j"})
	r := recv(t, c)
	if r.Type != TypeJoined || r.Room != room || r.ID != "j" {
		t.Fatalf("join %q as %q: got %+v", room, name, r)
	}
	return r
}

func nameOf(r reply) string {
	if r.Name == nil {
		return "<none>"
	}
	return *r.Name
}

// TestJoinNames: the joined frame tells a member its connection ID and
// name; every message carries the sender's, which the sender cannot forge;
// names are unique in the room, ignoring case, and free again on leave.
func TestJoinNames(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxDenials: -1}, limiter.Limits{})
	a, b, c := dialAs(t, n, "a"), dialAs(t, n, "b"), dialAs(t, n, "c")

	ja := joinAs(t, a, "lobby", "alice")
	if ja.Connection == "" || nameOf(ja) != "alice" {
		t.Fatalf("joined %+v, want a connection and name alice", ja)
	}
	send(t, b, map[string]string{"type": "join", "room": "lobby", "name": "ALICE", "id": "x"})
	if r := recv(t, b); r.Error != CodeNameTaken || r.Room != "lobby" || r.ID != "x" {
		t.Errorf("taken name: %+v", r)
	}
	jb := joinAs(t, b, "lobby", "  bob\t")
	if nameOf(jb) != "bob" || jb.Connection == ja.Connection {
		t.Errorf("joined %+v, want name bob and its own connection", jb)
	}
	// A name is per room: alice may be taken elsewhere.
	joinAs(t, b, "other", "alice")
	// No name: the joined frame has the connection and no name.
	send(t, c, map[string]string{"type": "join", "room": "lobby"})
	jc := recv(t, c)
	if jc.Type != TypeJoined || jc.Name != nil || jc.Connection == "" {
		t.Errorf("join without a name: %+v", jc)
	}

	// b tries to pass as alice.
	send(t, b, map[string]any{"type": "message", "room": "lobby", "from": ja.Connection, "name": "alice", "data": "hi"})
	for _, m := range []*websocket.Conn{a, b, c} {
		r := recv(t, m)
		if r.Type != TypeMessage || r.From != jb.Connection || nameOf(r) != "bob" {
			t.Errorf("relayed %+v, want from %s named bob", r, jb.Connection)
		}
	}
	send(t, c, msg("lobby", "anon"))
	for _, m := range []*websocket.Conn{a, b, c} {
		if r := recv(t, m); r.From != jc.Connection || r.Name != nil {
			t.Errorf("relayed %+v, want no name", r)
		}
	}

	// alice leaves (by closing): the name is free again.
	_ = a.Close()
	waitFor(t, ioTimeout, "alice's connection to end", func() bool { return n.h.Stats().Connections == 2 })
	send(t, c, map[string]string{"type": "leave", "room": "lobby"})
	recv(t, c)
	if r := joinAs(t, c, "lobby", "Alice"); nameOf(r) != "Alice" {
		t.Errorf("rejoin as Alice: %+v", r)
	}
}

func TestJoinNameInvalid(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxDenials: -1}, limiter.Limits{})
	c := dialAs(t, n, "c")
	for _, name := range []string{"", "   ", strings.Repeat("n", MaxJoinNameRunes+1), "a\u0000b", "a\nb",
		"a\u202eb", "a\u2028b", "\ufffd"} {
		send(t, c, map[string]string{"type": "join", "room": "lobby", "name": name, "id": "n"})
		if r := recv(t, c); r.Error != CodeInvalidName || r.ID != "n" {
			t.Errorf("name %q: %+v, want invalid_name", name, r)
		}
	}
	send(t, c, `{"type":"join","room":"lobby","name":7}`)
	if r := recv(t, c); r.Error != CodeInvalidFrame {
		t.Errorf("numeric name: %+v", r)
	}
	// The longest name, and emoji with joiners, are fine.
	for _, name := range []string{strings.Repeat("ñ", MaxJoinNameRunes), "👩‍💻 dev"} {
		if r := joinAs(t, c, "r-"+name, name); nameOf(r) != name {
			t.Errorf("name %q: %+v", name, r)
		}
	}
	if n.h.Stats().Rooms != 2 {
		t.Errorf("rooms %d, want the two good joins only", n.h.Stats().Rooms)
	}
}
