package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/internal/natsauth"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/identity"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// node is one running node: its NATS connection, its HTTP server and,
// once NATS and the KV buckets are ready, its limiter stack.
type node struct {
	cfg    *Config
	id     string
	log    *slog.Logger
	start  time.Time
	srv    *embedded.Server // embedded NATS; nil with an external cluster
	nc     *nats.Conn
	stack  atomic.Pointer[stack]
	recent *recentViolations
	// peers remembers which nodes answered statistics requests, and when.
	peers *peerBook
	// samples are this node's per-second samples; charts are every node's,
	// as the dashboard hub last merged them.
	samples sampleRing
	charts  chartHistory
	// stopping is closed when shutdown begins; dashboards watch it.
	stopping chan struct{}
	// dashboards counts the open dashboard WebSockets, which the HTTP
	// server does not track once hijacked.
	dashboards tracker
	// dashHub builds the frames every open dashboard shares.
	dashHub *dashboardHub
	// pages are the chat page's renderings.
	pages *chatPages
	// addrKey names an anonymous client by its address; ident, if set,
	// resolves signed-in users; demoSecret signs demo tokens.
	addrKey    wshandler.KeyFunc
	ident      *identity.JWT
	demoSecret []byte
}

// run runs a node until ctx ends, with the command-line args (without the
// program name), the environment env as KEY=VALUE strings, and writes its
// logs and the address to open to stdout. It returns an error for an
// invalid configuration or a failed start.
func run(ctx context.Context, args, env []string, stdout io.Writer) error {
	cfg, err := loadConfig(args, env, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if cfg.CheckConfig != "" {
		fmt.Fprintf(stdout, "%s: configuration valid%s\n", cfg.CheckConfig, policySummary(cfg))
		return nil
	}
	n := &node{cfg: cfg, id: cfg.ResolvedNodeID(), log: newLogger(cfg, stdout), start: time.Now(), recent: newRecentViolations(50), peers: newPeerBook(), stopping: make(chan struct{})}
	n.addrKey = wshandler.PeerIPPrefix(cfg.IPv6PrefixLen, cfg.TrustedProxies...)
	if n.ident, n.demoSecret, err = cfg.newResolver(func(r *http.Request) string {
		if k, err := n.addrKey(r); err == nil {
			return k
		}
		return identity.RemoteAddress(r)
	}); err != nil {
		return err
	}
	return n.run(ctx, stdout)
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (n *node) run(ctx context.Context, stdout io.Writer) error {
	cfg := n.cfg
	if cfg.EmbeddedNATS() {
		if err := n.startEmbedded(); err != nil {
			return err
		}
		defer func() {
			n.srv.Shutdown()
			n.log.Info("embedded NATS server stopped")
		}()
	}
	nc, err := n.connect()
	if err != nil {
		return err
	}
	n.nc = nc
	defer nc.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return configError("listen", "", cfg.Listen, err.Error())
	}
	defer ln.Close()
	var opsLn net.Listener
	var opsAddr net.Addr
	if cfg.OpsListen != "" {
		if opsLn, err = net.Listen("tcp", cfg.OpsListen); err != nil {
			return configError("ops_listen", "", cfg.OpsListen, err.Error()+" (each node on a machine needs its own ops_listen port; empty turns the operations endpoints off)")
		}
		defer opsLn.Close()
		opsAddr = opsLn.Addr()
	}
	if n.pages, err = newChatPages(opsAddr); err != nil {
		return err
	}
	hubCtx, stopHub := context.WithCancel(context.Background())
	defer stopHub()
	n.dashHub = newDashboardHub(dashboardInterval, n.dashboardFrame)
	go n.dashHub.run(hubCtx)
	go n.runSampler(hubCtx)

	servers := []*http.Server{cfg.HTTP.newServer(n.publicRoutes())}
	listeners := []net.Listener{ln}
	if opsLn != nil {
		servers = append(servers, cfg.HTTP.newServer(n.opsRoutes()))
		listeners = append(listeners, opsLn)
	}
	served := make(chan error, len(servers))
	for i, hs := range servers {
		go func() { served <- hs.Serve(listeners[i]) }()
	}
	ops := "operations endpoints off (ops_listen is empty)"
	if opsAddr != nil {
		ops = fmt.Sprintf("operations on http://%s/: /dashboard, /metrics, /stats, /admin", browserAddr(opsAddr))
	}
	fmt.Fprintf(stdout, "RateThrottle node %s: open http://%s/ (%s)\n", n.id, browserAddr(ln.Addr()), ops)
	n.log.Info("listening", "addr", ln.Addr().String(), "ops_addr", addrString(opsAddr), "node", n.id, "nats", nc.ConnectedUrlRedacted())

	upCtx, cancelUp := context.WithCancel(ctx)
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		n.bringUp(upCtx)
	}()

	select {
	case <-ctx.Done():
	case err := <-served:
		for _, hs := range servers {
			_ = hs.Close()
		}
		cancelUp()
		<-upDone
		n.shutdownStack(context.Background())
		return fmt.Errorf("http server: %w", err)
	}
	n.log.Info("shutting down")
	close(n.stopping)
	cancelUp()
	<-upDone
	if s := n.stack.Load(); s != nil {
		n.sayLeaving(s)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if s := n.stack.Load(); s != nil {
		if err := s.handler.Shutdown(sctx); err != nil {
			n.log.Warn("websocket shutdown", "err", err)
		}
	}
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			n.log.Warn("http shutdown", "err", err)
			_ = hs.Close()
		}
	}
	n.dashboards.closeAndWait()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		n.shutdownStack(sctx)
	}()
	select {
	case <-closed:
	case <-sctx.Done():
		// Without a quorum of the cluster, KV operations wait for their
		// timeouts; stop anyway rather than hang.
		n.log.Warn("shutdown timed out flushing to the cluster; stopping anyway", "timeout", cfg.ShutdownTimeout)
	}
	if err := nc.FlushTimeout(2 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		n.log.Warn("nats flush", "err", err)
	}
	n.log.Info("stopped")
	return nil
}

// bringUp builds the limiter stack, retrying until it succeeds or ctx ends:
// JetStream in a cluster of embedded servers is ready only once a quorum of
// nodes runs and has elected its leaders.
//
// Each attempt first asks JetStream for the account's information, with a
// short timeout: in a cluster only the meta leader answers. A new cluster
// elects it within a second, but a cluster restarted on its data directories
// waits out a Raft election timeout (4 to 9 s at random in nats-server)
// before its meta leader and each stream's leader exist. Building the stack
// before then would spend its whole operation timeout (stackOpTimeout) waiting, and
// make readiness lag the cluster's by up to as much.
func (n *node) bringUp(ctx context.Context) {
	js, err := jetstream.New(n.nc)
	if err != nil {
		n.log.Error("jetstream", "err", err)
		return
	}
	wait := 250 * time.Millisecond
	probes := 0
	for attempt := 1; ; {
		pctx, cancel := context.WithTimeout(ctx, jetStreamProbeTimeout)
		_, err := js.AccountInfo(pctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if probes%10 == 0 {
				n.log.Info("waiting for JetStream", "probe", probes+1, "err", err)
			}
			probes++
			select {
			case <-ctx.Done():
				return
			case <-time.After(jetStreamProbeTimeout / 2):
			}
			continue
		}
		s, err := newStack(ctx, n)
		if err == nil {
			n.stack.Store(s)
			n.log.Info("ready", "node", n.id, "kv_replicas", n.cfg.Replicas())
			return
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Info("waiting for NATS and JetStream", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		attempt++
		wait = min(wait*2, 2*time.Second)
	}
}

// jetStreamProbeTimeout bounds one probe of JetStream in bringUp.
const jetStreamProbeTimeout = 500 * time.Millisecond

func (n *node) shutdownStack(ctx context.Context) {
	if s := n.stack.Swap(nil); s != nil {
		s.close(ctx, n.log)
	}
}

// startEmbedded starts the embedded NATS server with JetStream.
func (n *node) startEmbedded() error {
	cfg := n.cfg
	host, port, _ := parseHostPort(cfg.Embedded.Listen)
	sc := embedded.Config{
		Name:         n.id,
		Host:         host,
		Port:         port,
		StoreDir:     filepath.Join(cfg.DataDir, n.id),
		ReadyTimeout: 30 * time.Second,
	}
	if sc.Host == "" {
		sc.Host = "0.0.0.0"
	}
	if cfg.Clustered() {
		chost, cport, _ := parseHostPort(cfg.Embedded.ClusterListen)
		if chost == "" {
			chost = "0.0.0.0"
		}
		sc.ClusterName = cfg.Embedded.ClusterName
		sc.ClusterHost = chost
		sc.ClusterPort = cport
		for _, r := range cfg.Embedded.Routes {
			if !sameHostPort(r, cfg.Embedded.ClusterListen) {
				sc.Routes = append(sc.Routes, r)
			}
		}
	}
	srv, err := embedded.Start(sc)
	if err != nil {
		return fmt.Errorf("embedded NATS server (nats.listen %q, data_dir %q): %w", cfg.Embedded.Listen, cfg.DataDir, err)
	}
	n.srv = srv
	n.log.Info("embedded NATS server started", "url", srv.ClientURL(), "cluster", srv.ClusterURL(), "store_dir", sc.StoreDir)
	return nil
}

// connect opens the node's NATS connection. It keeps retrying in the
// background when the servers are not reachable yet.
func (n *node) connect() (*nats.Conn, error) {
	c := n.cfg.NATS
	urls := c.URLs
	if n.srv != nil {
		urls = []string{n.srv.ClientURL()}
	}
	opts := []nats.Option{
		nats.Name("ratethrottle-node " + n.id),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			n.log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
	opts = append(opts, natsauth.Credentials{User: c.User, Password: c.Password, Token: c.Token, Creds: c.Creds,
		TLSCA: c.TLSCA, TLSCert: c.TLSCert, TLSKey: c.TLSKey}.Options()...)
	nc, err := nats.Connect(joinURLs(urls), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS (nats.url %q): %w", joinURLs(urls), err)
	}
	return nc, nil
}

func joinURLs(urls []string) string {
	s := ""
	for i, u := range urls {
		if i > 0 {
			s += ","
		}
		s += u
	}
	return s
}

// addrString returns a's address, or "off" for nil.
func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// browserAddr returns host:port to print for a listen address, with
// "localhost" for an unspecified host.
func browserAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		return fmt.Sprintf("localhost:%d", tcp.Port)
	}
	return tcp.AddrPort().String()
}
