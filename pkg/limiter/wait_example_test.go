package limiter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// A bridge that relays messages into the chat as client "bridge" waits for
// its per-client message budget instead of being refused.
func ExampleLimiter_Wait() {
	l, err := limiter.New(limiter.Config{Limits: limiter.Limits{
		MessagesPerMinute: 600, // ten a second
		MessageBurst:      2,
		MessageScope:      limiter.PerClient,
	}})
	if err != nil {
		panic(err)
	}
	defer l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	key := limiter.Key{Kind: limiter.KindMessages, ID: "bridge"}
	for i := 0; i < 4; i++ {
		if err := l.Wait(ctx, key, 1); err != nil {
			fmt.Println("gave up:", err)
			return
		}
	}
	// Two came from the burst, two had to wait 100 ms each.
	fmt.Println("relayed 4, paced:", time.Since(start) >= 190*time.Millisecond)

	err = l.Wait(ctx, key, 3)
	fmt.Println(err)
	// Output:
	// relayed 4, paced: true
	// limiter: wait: n exceeds the bucket's burst: 3 > 2
}
