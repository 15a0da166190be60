// Command node runs a RateThrottle node: a rate-limited WebSocket chat
// server whose limits hold across every node sharing a NATS cluster.
//
// With no flags it starts an embedded NATS server with JetStream (data under
// ./data), serves the chat page at / and the WebSocket endpoint at /ws on
// :8080, serves the dashboard, /metrics, /stats and the admin API on the
// operations listener 127.0.0.1:9000, and prints where to open both. Run it with -help for every setting;
// each has a flag, a RATETHROTTLE_* environment variable and a YAML key,
// in that order of precedence.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
		os.Exit(1)
	}
}
