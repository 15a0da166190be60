package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// The WebSocket limiter: admit a connection, check its messages, read the
// statistics. A fixed clock keeps the output stable.
func Example() {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	l, err := limiter.New(limiter.Config{
		Limits: limiter.Limits{
			ConnectionsPerMinute:     10,
			MessagesPerMinute:        3,
			BytesPerMinute:           1 << 20,
			MaxConcurrentConnections: 5,
			MaxMessageSize:           64 << 10,
		},
		Sink: limiter.ViolationFunc(func(v limiter.Violation) {
			if v.RetryAfter == limiter.Never {
				fmt.Printf("violation: %s by %s, no wait helps\n", v.Type, v.ClientID)
				return
			}
			fmt.Printf("violation: %s by %s, retry after %v\n", v.Type, v.ClientID, v.RetryAfter)
		}),
		Now: func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	ctx := context.Background()

	d, err := l.Connect(ctx, "conn-1", "203.0.113.7", map[string]string{"user": "ada"})
	if err != nil || !d.Allowed {
		fmt.Println("refused:", d.Reason)
		return
	}
	for i := 0; i < 4; i++ {
		d := l.CheckMessage(ctx, "conn-1", len("hello"))
		fmt.Println(d.Allowed, d.Reason, d.RetryAfter)
	}
	d = l.CheckMessage(ctx, "conn-1", 100<<10)
	fmt.Println(d.Reason, "max", d.MaxSize)

	s := l.Statistics()
	fmt.Println(s.ActiveConnections, s.TotalMessages, s.TotalBytes)
	_ = l.UnregisterConnection(ctx, "conn-1")
	// Output:
	// true ok 0s
	// true ok 0s
	// true ok 0s
	// violation: message_rate by 203.0.113.7, retry after 20s
	// false rate_limit_exceeded 20s
	// violation: message_size by 203.0.113.7, no wait helps
	// message_too_large max 65536
	// 1 3 15
}

// A bucket on its own, with time passed in.
func ExampleBucket() {
	spec := limiter.PerMinute(2)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b limiter.Bucket
	fmt.Println(b.TakeAt(spec, t0, 2).OK)
	r := b.TakeAt(spec, t0, 1)
	fmt.Println(r.OK, r.RetryAfter)
	fmt.Println(b.TakeAt(spec, t0.Add(r.RetryAfter), 1).OK)
	// Output:
	// true
	// false 30s
	// true
}

// Presets carry the usual configurations; Validate names a bad field.
func ExampleLimits_Validate() {
	lim := limiter.Moderate()
	lim.MessagesPerMinute = -5
	fmt.Println(lim.Validate())
	// Output:
	// limiter: invalid limits: MessagesPerMinute = -5: must not be negative (0 means unlimited)
}

// Every package of the module reports an invalid configuration value as a
// *FieldError: one errors.As finds the field whichever package refused it,
// and errors.Is still tells the packages apart by their sentinels.
func ExampleFieldError() {
	_, err := limiter.New(limiter.Config{Limits: limiter.Limits{MaxConcurrentConnections: -1}})
	var fe *limiter.FieldError
	if errors.As(err, &fe) {
		fmt.Println(fe.Field, errors.Is(err, limiter.ErrInvalidLimits))
		fmt.Println(fe.Problem())
	}
	// Output:
	// MaxConcurrentConnections true
	// MaxConcurrentConnections = -1: must not be negative (0 means unlimited)
}
