package limiter

import (
	"context"
	"time"
)

const numReasons = len(reasons)

// reasonIndex maps a Reason to its place in reasons, or -1.
func reasonIndex(r Reason) int {
	for i, x := range reasons {
		if x == r {
			return i
		}
	}
	return -1
}

// Statistics is a snapshot of a Limiter's state on this node.
type Statistics struct {
	// ActiveConnections is the number of registered connections.
	ActiveConnections int
	// UniqueClients is the number of clients with a registered connection.
	UniqueClients int
	// TotalMessages is the number of allowed messages since New.
	TotalMessages int64
	// TotalBytes is the number of allowed payload bytes since New.
	TotalBytes int64
	// Denied counts denials by reason since New.
	Denied map[Reason]int64
	// ViolationPanics counts panics recovered from violation callbacks.
	ViolationPanics int64
	// Limits are the limits in force.
	Limits Limits
}

// Statistics returns a snapshot of the Limiter's counters.
func (l *Limiter) Statistics() Statistics {
	s := Statistics{
		TotalMessages:   l.retired.msgs.Load(),
		TotalBytes:      l.retired.bytes.Load(),
		Denied:          make(map[Reason]int64),
		ViolationPanics: l.panics.Load(),
		Limits:          l.Limits(),
	}
	s.ActiveConnections, s.UniqueClients = l.reg.counts()
	l.reg.each(func(c *conn) {
		c.mu.Lock()
		s.TotalMessages += c.count
		s.TotalBytes += c.nbytes
		c.mu.Unlock()
	})
	for i := range l.denied {
		if n := l.denied[i].Load(); n > 0 {
			s.Denied[reasons[i]] = n
		}
	}
	return s
}

// ConnectionInfo describes one registered connection.
type ConnectionInfo struct {
	// ConnectionID is the ID the connection was registered under.
	ConnectionID string
	// ClientID is the client the connection belongs to.
	ClientID string
	// ConnectedAt is when the connection was registered.
	ConnectedAt time.Time
	// MessageCount and BytesReceived count the allowed messages and their
	// payload bytes.
	MessageCount  int64
	BytesReceived int64
	// LastMessageAt is the time of the last allowed message; zero if none.
	LastMessageAt time.Time
	// Metadata is the metadata given at registration.
	Metadata map[string]string
}

// ConnectionInfo returns what the Limiter knows of connID, and false if it
// is not registered.
func (l *Limiter) ConnectionInfo(connID string) (ConnectionInfo, bool) {
	c := l.reg.get(connID)
	if c == nil {
		return ConnectionInfo{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return ConnectionInfo{
		ConnectionID:  c.id,
		ClientID:      c.client,
		ConnectedAt:   c.connectedAt,
		MessageCount:  c.count,
		BytesReceived: c.nbytes,
		LastMessageAt: c.lastMsg,
		Metadata:      c.meta,
	}, true
}

// ClientConnections returns the number of connections client has
// registered with this Limiter (this node).
func (l *Limiter) ClientConnections(client string) int {
	return l.reg.clientCount(client)
}

// ClusterConnections returns the number of connections client holds on
// every node that shares the Limiter's Slots. It is only tracked when
// MaxConcurrentConnections is set; otherwise it equals ClientConnections.
func (l *Limiter) ClusterConnections(ctx context.Context, client string) (int64, error) {
	if l.Limits().MaxConcurrentConnections <= 0 {
		return int64(l.reg.clientCount(client)), nil
	}
	return l.slots.Count(ctx, client)
}
