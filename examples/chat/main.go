// Command chat is the smallest real server that embeds RateThrottle: a
// rate-limited chat with rooms and a browser page. Run one with an embedded
// NATS server, or several pointed at the same NATS to form one cluster:
//
//	go run ./examples/chat
//	go run ./examples/chat -addr :8082 -nats nats://127.0.0.1:4222
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

//go:embed index.html
var page []byte

func main() {
	addr := flag.String("addr", ":8081", "HTTP listen address")
	natsURL := flag.String("nats", "", "NATS server to join; empty starts an embedded one on 127.0.0.1:4222")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := run(ctx, ln, *natsURL); err != nil {
		log.Fatal(err)
	}
}

// run serves the chat on ln until ctx is done.
func run(ctx context.Context, ln net.Listener, natsURL string) error {
	if natsURL == "" {
		srv, err := embedded.Start(embedded.Config{Port: 4222})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		natsURL = srv.ClientURL()
	}
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()

	// The cluster store keeps per-client and room buckets in agreement
	// across every node on this NATS.
	store, err := kvstore.New(ctx, kvstore.Config{Conn: nc})
	if err != nil {
		return err
	}
	defer store.Close()
	limits := limiter.Moderate()
	limits.MessageScope = limiter.PerClient
	lim, err := limiter.New(limiter.Config{Limits: limits, Store: store})
	if err != nil {
		return err
	}
	defer lim.Close()

	broker, err := wshandler.NewNATSBroker(wshandler.NATSBrokerConfig{Conn: nc, NodeID: store.NodeID()})
	if err != nil {
		return err
	}
	ws, err := wshandler.New(wshandler.Config{
		Limiter:         lim,
		NodeID:          store.NodeID(),
		Broker:          broker,
		RejectWithClose: true, // browsers cannot read a 429: close with 1008 and the reason
		DefaultRoom:     wshandler.RoomLimits{MaxMembers: 100, MessagesPerMinute: 300, MemberMessagesPerMinute: 20},
	})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/ws", ws)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Printf("chat on http://%s (node %s, NATS %s)", ln.Addr(), store.NodeID(), natsURL)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = ws.Shutdown(shutdown) // close 1001 to every connection
	if err := hs.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
