package limiter

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCheckMessageAllocatesNothing guards the message path: an allowed
// CheckMessage allocates nothing, with per-connection buckets and with
// per-client buckets in the store.
func TestCheckMessageAllocatesNothing(t *testing.T) {
	for _, scope := range []Scope{PerConnection, PerClient} {
		t.Run(scope.String(), func(t *testing.T) {
			lim := Generous()
			lim.MessagesPerMinute = 1 << 40
			lim.BytesPerMinute = 1 << 50
			lim.MessageScope = scope
			l, clk := newTestLimiter(t, lim, nil)
			ids := make([]string, 100)
			for i := range ids {
				ids[i] = fmt.Sprintf("conn-%d", i)
				_, err := l.Connect(ctx, ids[i], fmt.Sprintf("client-%d", i%25), nil)
				require.NoError(t, err)
			}
			i := 0
			a := testing.AllocsPerRun(1000, func() {
				if d := l.CheckMessage(ctx, ids[i%len(ids)], 512); !d.Allowed {
					t.Fatalf("denied: %+v", d)
				}
				i++
				clk.Advance(1)
			})
			require.Zero(t, a, "CheckMessage allocates")
		})
	}
}
