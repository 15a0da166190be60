package kvstore

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
)

// beat is a heartbeat entry as a watch delivers it, to replay an order of
// delivery that a live cluster produces only by chance.
type beat struct {
	key   string
	value []byte
	rev   uint64
	at    time.Time
	delta uint64
}

func (e beat) Bucket() string                  { return "test" }
func (e beat) Key() string                     { return e.key }
func (e beat) Value() []byte                   { return e.value }
func (e beat) Revision() uint64                { return e.rev }
func (e beat) Created() time.Time              { return e.at }
func (e beat) Delta() uint64                   { return e.delta }
func (e beat) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// TestRestartedWatchFirstBatchJudgesNobody replays what a node's watch
// delivers when it is restarted after stalling for longer than the dead
// span: the first batch holds each key's latest value in stream order, so
// this node's own latest heartbeat can come before another node's newer
// one, while the node still holds that other node's heartbeat from before
// the stall. Judged by that own heartbeat, the other node would look dead
// until its entry arrived; it must not.
func TestRestartedWatchFirstBatchJudgesNobody(t *testing.T) {
	srv := startServer(t, embedded.Config{})
	// Heartbeats every second, dead after 3: the stall below is real time.
	s := newNode(t, srv.ClientURL(), Config{NodeID: "judge", HeartbeatInterval: time.Second})
	// Stamps an hour ahead: the store's own real heartbeats, stamped now,
	// never move its reference past them.
	t0 := time.Now().Add(time.Hour)
	rev := uint64(1 << 40)
	hb := func(node string, at time.Time, delta uint64) beat {
		rev++
		return beat{key: nodeKey(token(node)), value: marshalInt(at.UnixNano()), rev: rev, at: at, delta: delta}
	}
	s.applyNode(hb("peer", t0, 0))
	s.applyNode(hb("judge", t0.Add(100*time.Millisecond), 0))
	require.Equal(t, 2, s.LiveNodes())
	// The watch stalls for more than two heartbeat intervals: the
	// connection goes, and with it the store's own deliveries.
	s.nc.Close()
	time.Sleep(2*time.Second + 200*time.Millisecond) // the gap is the condition under test
	// The restarted watch's first batch: this node's latest heartbeat,
	// then the peer's newer one.
	s.applyNode(hb("judge", t0.Add(10*time.Second), 1))
	require.Equal(t, 2, s.LiveNodes(), "the peer judged dead by a heartbeat of the first batch")
	s.applyNode(hb("peer", t0.Add(10100*time.Millisecond), 0))
	require.Equal(t, 2, s.LiveNodes())
	// Live again: the next own heartbeat judges, and the peer is live.
	s.applyNode(hb("judge", t0.Add(11*time.Second), 0))
	require.Equal(t, 2, s.LiveNodes())
	// And it does judge: the peer silent past the dead span is dead.
	s.applyNode(hb("judge", t0.Add(15*time.Second), 0))
	require.Equal(t, 1, s.LiveNodes())
}
