// Package wshandler is a net/http handler for WebSocket servers, built on
// gorilla/websocket, that applies a limiter.Limiter to every connection and
// message and serves rooms with their own limits, across a cluster of nodes
// when a Broker (such as NATSBroker) carries room messages between them.
//
// An application mounts a Handler on its own mux and uses it one of two
// ways:
//
//   - With the built-in JSON room protocol (join, leave, message and error
//     frames, described in docs/PROTOCOL.md), when Config.OnMessage is nil.
//   - With its own protocol, through Config.OnConnect, Config.OnMessage and
//     Config.OnClose and the Conn they receive, which it can Send to and
//     Close.
//
// # Wiring
//
// The Handler takes the ban gate and the violation sink from its
// Config.Limiter (limiter.Config.Gate and limiter.Config.Sink): they are
// set once, there. The Limiter's Gate is consulted on every message too,
// and the handler's own violations (rooms, classes, protocol) reach the
// Limiter's Sink through Limiter.Report, counted in its Statistics like
// its own.
//
// # Identity and admission
//
// Config.KeyFunc names the client of a request; the default is the peer IP,
// with X-Forwarded-For and X-Real-IP honoured only from Config.TrustedProxies,
// and an IPv6 client named by its network of Config.IPv6PrefixLen bits (a
// /64 by default). PeerIP, PeerIPPrefix, QueryParam and Header build other
// KeyFuncs; whatever the KeyFunc, a client ID over MaxClientIDLength bytes
// or not UTF-8 is refused with HTTP 400, and a KeyFunc error that wraps
// ErrUnauthenticated with HTTP 401 (1008 with Config.RejectWithClose). Every connection is
// admitted by Limiter.Connect before the upgrade: a denied one gets HTTP 429
// with Retry-After (whole seconds, rounded up) and a JSON body, 403 if the
// client is banned, or, with Config.RejectWithClose, an upgrade followed by a
// close frame with code 1008 and the reason.
//
// # Messages
//
// A text frame that is not valid UTF-8 fails the connection with close code
// 1007 and is never relayed; the room protocol refuses a binary frame that
// is not UTF-8 as malformed. A connection's read limit is its tier's
// max_message_size in Config.Policy, else the MaxMessageSize the Limiter
// applies to it; it follows a new policy version from the next message. An
// oversized message is
// refused with close code 1009 from its header, before its payload is read,
// and the connection is drained for a bounded time so that the client
// receives the close frame. A client's pings and pongs are bounded by
// Config.ControlFramesPerMinute. Every message is checked against the message rate and bandwidth; a denial
// gets a JSON error frame with retry_after_ms, and a connection denied more
// than Config.MaxDenials times within Config.DenialWindow is closed with 1008.
//
// With Config.Policy, a message also takes its class's cost from the class
// buckets per connection, user, address and room: in the room protocol the
// class is the frame's type (never one of the server's own frame types),
// with OnMessage the one Config.Classify names. A denial names the class
// and the layer in the error frame and in the class_rate violation.
//
// # Rooms
//
// A room message passes, in order: the room's size cap, the ban gate, the
// connection's (or client's) message rate and bandwidth, the sender's rate in
// the room and the room's total rate. A message denied by any layer consumes
// nothing in any layer. Joins are checked against the room's member cap and
// against Config.MaxRoomsPerConn and Config.MaxRoomsPerNode. Room buckets are
// kept in the Limiter's Store, so they are cluster-wide when that store is.
// A room with no members on a node is dropped there, with its subscription.
// Handler.SetRoomLimits changes the room rules at run time: the open rooms
// get them at once, their buckets keep their level, and no one is evicted.
//
// Each member of a room, on any node, receives each room message exactly
// once, in the order its sender sent it. The sending node delivers to its own
// members and publishes the frame once to the Broker; other nodes deliver
// what they receive to theirs and ignore their own publications. The
// NATSBroker publishes nothing for a room that no other node has.
//
// # Slow readers and shutdown
//
// Each connection has a bounded send queue, drained by a writer goroutine
// that runs only while frames are queued (frames queued together leave in
// one write call), or by the connection's reader right after it handled a
// message. Putting a frame on a queue never waits: a connection whose queue
// is full is aborted, so a reader that stops reading never delays a room or
// any other connection. Shutdown closes every connection with 1001 after
// flushing what is queued for it, unregisters it from the Limiter and flushes
// the Broker.
package wshandler
