package cluster

import (
	"encoding/json"
	"testing"
	"time"
)

// session keeps one client connected to a node and joined to a room until
// stop is closed, reconnecting (every 50 ms, for as long as stop is open)
// when the node goes away. Every frame goes to onFrame; once a connection
// has joined the room, up is called and then work, which returns when it
// is done with the connection (or the connection ends); down is called
// after it with the time the connection stopped being usable.
type session struct {
	t       *testing.T
	node    *nodeProc
	client  string
	room    string
	onFrame func(frame)
	up      func(c *wsClient, at time.Time)
	work    func(c *wsClient, stop <-chan struct{})
	down    func(at time.Time)
}

// run runs the session until stop is closed. It is meant for its own
// goroutine.
func (s *session) run(stop <-chan struct{}) {
	for attempt := 0; attempt < 100000; attempt++ {
		select {
		case <-stop:
			return
		default:
		}
		joined := make(chan struct{}, 1)
		c, err := dialClient(s.t, s.node.Addr(), s.client, func(f frame) {
			if f.Type == "joined" && f.Room == s.room {
				select {
				case joined <- struct{}{}:
				default:
				}
			}
			if s.onFrame != nil {
				s.onFrame(f)
			}
		})
		if err != nil {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		ok := false
		if c.send(map[string]any{"type": "join", "room": s.room}) == nil {
			select {
			case <-joined:
				ok = true
			case <-c.done:
			case <-stop:
			case <-time.After(5 * time.Second):
			}
		}
		if ok {
			if s.up != nil {
				s.up(c, time.Now())
			}
			if s.work != nil {
				s.work(c, stop)
			} else {
				select {
				case <-c.done:
				case <-stop:
				}
			}
			if s.down != nil {
				s.down(time.Now())
			}
		}
		c.close()
	}
}

// payload is the data of the suite's room messages.
type payload struct {
	ID string `json:"id"`
}

// messageID returns the id in a message frame's data, or "".
func messageID(f frame) string {
	if f.Type != "message" {
		return ""
	}
	var p payload
	if json.Unmarshal(f.Data, &p) != nil {
		return ""
	}
	return p.ID
}
