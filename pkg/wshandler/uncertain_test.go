package wshandler

import (
	"context"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// uncertainStore is a memory store whose denials say they came only from
// the cluster's uncertainty, as a cluster store's allowance denials do.
type uncertainStore struct{ *limiter.MemoryStore }

func (s uncertainStore) Take(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	r, err := s.MemoryStore.Take(ctx, key, spec, now, n)
	r.Uncertain = !r.OK
	return r, err
}

// TestUncertainDenialsNeverClose: denials the cluster's uncertainty caused
// are answered with error frames but never close the connection with
// too_many_denials, in the message layer and in the room layer alike; the
// same denials from an exact store close it (TestDenialsClose1008).
func TestUncertainDenialsNeverClose(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		limits limiter.Limits
		room   RoomLimits
		reason limiter.Reason
	}{
		{"message rate", limiter.Limits{MessagesPerMinute: 2, MessageScope: limiter.PerClient}, RoomLimits{}, // the join takes one
			limiter.ReasonRateLimitExceeded},
		{"room member rate", limiter.Limits{}, RoomLimits{MemberMessagesPerMinute: 1}, limiter.ReasonRoomRateExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := uncertainStore{limiter.NewMemoryStore(limiter.MemoryStoreConfig{})}
			t.Cleanup(func() { _ = store.Close() })
			l, err := limiter.New(limiter.Config{Store: store, Limits: tc.limits})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			n := newNode(t, Config{Limiter: l, MaxDenials: 2, DefaultRoom: tc.room}, limiter.Limits{})
			c := dial(t, n)
			join(t, c, "lobby")
			send(t, c, msg("lobby", "hello"))
			if r := recv(t, c); r.Type != TypeMessage {
				t.Fatalf("first message: %+v", r)
			}
			const denials = 5 // more than MaxDenials
			for i := range denials {
				send(t, c, msg("lobby", "again"))
				if r := recv(t, c); r.Error != ErrorCode(tc.reason) {
					t.Fatalf("denial %d: got %+v, want %s", i, r, tc.reason)
				}
			}
			// Still open: the next frame is answered, not met by a close
			// (a leave, which the message rate may deny in its turn).
			send(t, c, map[string]any{"type": "leave", "room": "lobby"})
			extra := int64(0)
			switch r := recv(t, c); {
			case r.Error == ErrorCode(tc.reason):
				extra = 1
			case r.Type != TypeLeft:
				t.Fatalf("after the denials: got %+v, want left or %s", r, tc.reason)
			}
			if st := n.h.Stats(); st.Denials != denials+extra {
				t.Errorf("Stats().Denials = %d, want %d", st.Denials, denials+extra)
			}
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		})
	}
}
