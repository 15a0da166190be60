package wshandler

import (
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// handleFrame runs one frame of the built-in room protocol. A text frame
// is UTF-8 (the read loop has checked); a binary frame that is not is
// malformed, since its data would be relayed in a text frame.
func (c *Conn) handleFrame(mt int, data []byte) {
	h := c.h
	var f frame
	err := errFrame
	if mt == websocket.TextMessage || utf8.Valid(data) {
		f, err = decodeFrame(data)
	}
	if err != nil {
		// A malformed frame still costs a message and its bytes.
		if d := h.lim.CheckMessage(c.ctx(), c.id, len(data)); !d.Allowed {
			e := errorFromDecision(d)
			e.ref = f.ID
			c.deny(e)
			return
		}
		c.deny(errorInfo{code: CodeInvalidFrame, ref: f.ID})
		return
	}
	t, class := h.policyClass(f.Type)
	switch f.Type {
	case TypeJoin, TypeLeave, TypeMessage:
	default:
		if class != policy.NoClass {
			break // a frame of a policy class: a room message of that type
		}
		if d := h.lim.CheckMessage(c.ctx(), c.id, len(data)); !d.Allowed {
			e := errorFromDecision(d)
			e.ref = f.ID
			c.deny(e)
			return
		}
		c.deny(errorInfo{code: CodeUnknownType, ref: f.ID})
		return
	}
	if checkRoomName(f.Room, h.cfg.MaxRoomNameLength) != nil {
		c.deny(errorInfo{code: CodeInvalidRoom, ref: f.ID})
		return
	}
	switch f.Type {
	case TypeJoin:
		var nick string
		if f.Name != nil {
			var ok bool
			if nick, ok = checkJoinName(*f.Name); !ok {
				c.deny(errorInfo{code: CodeInvalidName, room: f.Room, ref: f.ID})
				return
			}
		}
		if !c.gate(f.Room, f.ID) {
			return
		}
		now := h.cfg.Now()
		d := h.lim.CheckMessageAt(c.ctx(), c.id, len(data), now)
		if !d.Allowed {
			e := errorFromDecision(d)
			e.room, e.ref = f.Room, f.ID
			c.deny(e)
			return
		}
		// A policy class named "join" charges joins, its room layer
		// the joins to the room.
		if class != policy.NoClass {
			if e, ok := c.takeClass(t, class, f.Room, errorInfo{room: f.Room, ref: f.ID}, now); !ok {
				h.lim.RefundMessage(c.ctx(), c.id, len(data))
				c.deny(e)
				return
			}
		}
		if e, ok := c.join(f.Room, f.ID, nick); !ok {
			h.lim.RefundMessage(c.ctx(), c.id, len(data))
			if class != policy.NoClass {
				c.refundClass(t, class, f.Room, now)
			}
			c.deny(e)
			return
		}
		m := c.rooms[f.Room]
		_ = c.enqueue(outFrame{typ: websocket.TextMessage, data: joinedFrame(m.r.nameJSON, c.idJSON, m.nameJSON, f.ID)})
	case TypeLeave:
		// No class charges a leave: a client can always leave.
		m, in := c.rooms[f.Room]
		if !in {
			c.deny(errorInfo{code: CodeNotMember, room: f.Room, ref: f.ID})
			return
		}
		if d := h.lim.CheckMessage(c.ctx(), c.id, len(data)); !d.Allowed {
			e := errorFromDecision(d)
			e.room, e.ref = f.Room, f.ID
			c.deny(e)
			return
		}
		c.leave(m)
		_ = c.enqueue(outFrame{typ: websocket.TextMessage, data: replyFrame(TypeLeft, f.Room, f.ID)})
	default: // TypeMessage, or the type of a policy class
		m, in := c.rooms[f.Room]
		if !in {
			c.deny(errorInfo{code: CodeNotMember, room: f.Room, ref: f.ID})
			return
		}
		if e, ok := c.roomMessage(m.r, len(data), f.ID, t, class); !ok {
			if e.code != "" {
				c.deny(e)
			}
			return
		}
		c.broadcast(m.r, relayFrame(f.Type, m.r.nameJSON, c.idJSON, m.nameJSON, f.Data))
	}
}

// broadcast delivers frame to the room's members on this node, in the
// sender's order, and publishes it once for the other nodes.
func (c *Conn) broadcast(r *room, frame []byte) {
	r.deliver(frame)
	if b := c.h.cfg.Broker; b != nil {
		if err := b.Publish(c.ctx(), r.name, frame); err != nil {
			c.h.publishErrors.Add(1)
		}
	}
}
