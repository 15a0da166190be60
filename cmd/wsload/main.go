// Command wsload opens many WebSocket connections to RateThrottle nodes on
// this machine, joins them to rooms, sends room messages at a set rate, and
// reports connections established, messages sent and delivered per second,
// delivery latency percentiles, errors by close code, and each node's
// memory per connection read from its /metrics.
//
//	go run ./cmd/wsload -url ws://127.0.0.1:8080/ws -conns 2000 -rooms 20 -rate 1000 -duration 30s
//
// Every message carries its send time; a delivery's latency is the time
// from the sender's write to the member's read, both in this process.
// Connections are dialled from -sources addresses in 127.0.0.0/8, so that
// tens of thousands of connections fit in the ephemeral port range and the
// node sees many clients. Targets must be loopback addresses unless
// -allow-remote is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := realMain(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(1)
	}
}

// realMain parses args, runs the load and writes the report to out and
// progress to log.
func realMain(args []string, out, log io.Writer) error {
	fs := flag.NewFlagSet("wsload", flag.ContinueOnError)
	fs.SetOutput(log)
	var (
		urls        = fs.String("url", "ws://127.0.0.1:8080/ws", "node WebSocket URLs, comma-separated; connections are spread over them")
		allowRemote = fs.Bool("allow-remote", false, "allow targets that are not loopback addresses")
		metrics     = fs.String("metrics-path", "/metrics", "path of the nodes' Prometheus metrics (empty: do not read them)")
		metricsURL  = fs.String("metrics-url", "", "the metrics URL of the one -url node, when not beside its WebSocket (a node's operations listener)")
		compare     = fs.String("compare", "", "compare servers: name=url pairs (url|metrics-url when metrics are served apart), comma-separated, the subject first; runs the load against each in turn (a server named echo gets no join frames)")
		rounds      = fs.Int("rounds", 5, "with -compare, rounds over all servers")
		cfg         Config
	)
	fs.IntVar(&cfg.Conns, "conns", 100, "connections to open")
	fs.IntVar(&cfg.Sources, "sources", 16, "127.x source addresses to dial IPv4 loopback targets from")
	fs.IntVar(&cfg.DialConcurrency, "dial-concurrency", 64, "handshakes in flight")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", 10*time.Second, "bound of one handshake")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 2*time.Minute, "bound of the whole connect phase")
	fs.IntVar(&cfg.Rooms, "rooms", 1, "rooms; connection i joins room i mod rooms (0: no rooms, connections stay idle)")
	fs.IntVar(&cfg.SendersPerRoom, "senders", 1, "members of each room that send")
	fs.Float64Var(&cfg.Rate, "rate", 100, "messages a second from all senders together")
	fs.IntVar(&cfg.Size, "size", 0, "message frame size in bytes (0: the smallest, about 90)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to send, or to hold idle connections")
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Second, "pause after connecting before reading memory")
	fs.DurationVar(&cfg.Drain, "drain", 2*time.Second, "wait for deliveries after the last send")
	fs.DurationVar(&cfg.SampleEvery, "sample", 0, "read the nodes' metrics at this interval (0: only before, connected, after)")
	fs.IntVar(&cfg.Window, "window", 0, "closed loop: messages each sender keeps in flight, replacing -rate (0: use -rate)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var contenders []Contender
	if *compare != "" {
		var err error
		if contenders, err = ParseContenders(*compare, *allowRemote, *metrics); err != nil {
			return err
		}
		cfg.NoJoin = true // for the server named echo only
		*urls = contenders[0].Target.WS.String()
	}
	for _, u := range strings.Split(*urls, ",") {
		t, err := ParseTarget(strings.TrimSpace(u), *allowRemote, *metrics)
		if err != nil {
			return err
		}
		cfg.Targets = append(cfg.Targets, t)
	}
	if *metricsURL != "" {
		if len(cfg.Targets) != 1 {
			return errors.New("-metrics-url needs exactly one -url")
		}
		m, err := ParseMetricsURL(*metricsURL, *allowRemote)
		if err != nil {
			return err
		}
		cfg.Targets[0].Metrics = m
	}
	if got, err := raiseFileLimit(uint64(cfg.Conns) + 1024); err != nil {
		fmt.Fprintf(log, "warning: open-file limit %d: %v\n", got, err)
	} else if got < uint64(cfg.Conns)+64 {
		fmt.Fprintf(log, "warning: open-file limit %d leaves fewer than 64 descriptors beyond %d connections\n", got, cfg.Conns)
	}
	cfg.Log = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if contenders != nil {
		cmp, err := Compare(ctx, cfg, contenders, *rounds, log)
		if err != nil {
			return err
		}
		WriteComparison(out, cmp)
		return nil
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	WriteReport(out, res)
	return nil
}
