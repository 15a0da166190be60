// Package embedded runs NATS servers inside the process: one server or a
// routed cluster, with JetStream, on loopback ports chosen by the kernel and
// in temporary store directories unless told otherwise. The node binary
// uses it to run its own server; tests and examples use it for real NATS
// without an outside process.
//
// It is its own package so that a program using the cluster store
// (pkg/kvstore) against an external NATS links the client library alone,
// not nats-server.
package embedded

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// ErrInvalidConfig is the sentinel of the *limiter.FieldError that Start
// and StartCluster return for an invalid Config.
var ErrInvalidConfig = errors.New("embedded: invalid config")

// ErrNotReady is wrapped when a server or cluster does not become ready in
// time.
var ErrNotReady = errors.New("embedded: NATS server not ready")

// ErrClosed is returned by Restart after Shutdown.
var ErrClosed = errors.New("embedded: server shut down")

// Config configures a server started by Start or StartCluster. Zero fields
// get defaults.
type Config struct {
	// Name is the server name. Empty means a unique random name.
	Name string
	// Host is the client listen address. Empty means "127.0.0.1".
	Host string
	// Port is the client port. 0 or -1 means a random free port.
	Port int
	// StoreDir is the JetStream storage directory. Empty means a temporary
	// directory that Shutdown removes.
	StoreDir string
	// NoJetStream starts the server without JetStream, to test the error
	// path of stores that need it.
	NoJetStream bool
	// ClusterName enables clustering when set.
	ClusterName string
	// ClusterHost is the route listen address. Empty means Host.
	ClusterHost string
	// ClusterPort is the route port. 0 or -1 means a random free port.
	ClusterPort int
	// Routes are the routes to other servers, such as
	// "nats-route://127.0.0.1:6222".
	Routes []string
	// ReadyTimeout bounds how long Start waits for the server to
	// accept connections and for JetStream. Zero means 10 seconds.
	ReadyTimeout time.Duration
}

// Server is a NATS server running in this process. Stop and Restart bring it down and up
// again on the same port and store directory, so tests can cut a store off
// from NATS; Shutdown ends it for good. A Server is safe for concurrent use.
type Server struct {
	mu      sync.Mutex
	cfg     Config // resolved: ports and store dir fixed after the first start
	ns      *server.Server
	tempDir bool // StoreDir was created by Start and is removed on Shutdown
	closed  bool
}

// setDefaults fills in the listen addresses and, with ready, ReadyTimeout
// where c leaves them empty.
func (c *Config) setDefaults(ready time.Duration) {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.ClusterHost == "" {
		c.ClusterHost = c.Host
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = ready
	}
}

// Start starts a NATS server and returns once it accepts connections and,
// unless NoJetStream is set, JetStream is ready. An invalid cfg is refused
// with a *limiter.FieldError that unwraps to ErrInvalidConfig.
func Start(cfg Config) (*Server, error) {
	if cfg.Name == "" {
		cfg.Name = "ratethrottle-" + randomName()
	}
	cfg.setDefaults(10 * time.Second)
	switch {
	case cfg.Port < -1 || cfg.Port > 65535:
		return nil, invalidConfig("Port", cfg.Port, "must be -1 to 65535 (0 or -1: a free port)")
	case cfg.ClusterPort < -1 || cfg.ClusterPort > 65535:
		return nil, invalidConfig("ClusterPort", cfg.ClusterPort, "must be -1 to 65535 (0 or -1: a free port)")
	case cfg.ReadyTimeout < 0:
		return nil, invalidConfig("ReadyTimeout", cfg.ReadyTimeout, "must not be negative (0 means the default)")
	case cfg.ClusterName == "" && len(cfg.Routes) > 0:
		return nil, invalidConfig("Routes", cfg.Routes, "is set without ClusterName")
	}
	if cfg.Port == 0 {
		cfg.Port = -1
	}
	if cfg.ClusterPort == 0 {
		cfg.ClusterPort = -1
	}
	s := &Server{cfg: cfg}
	if cfg.StoreDir == "" && !cfg.NoJetStream {
		dir, err := os.MkdirTemp("", "ratethrottle-nats-")
		if err != nil {
			return nil, fmt.Errorf("embedded: store dir: %w", err)
		}
		s.cfg.StoreDir = dir
		s.tempDir = true
	}
	if err := s.start(); err != nil {
		if s.tempDir {
			os.RemoveAll(s.cfg.StoreDir)
		}
		return nil, err
	}
	return s, nil
}

// start starts the NATS server from s.cfg and records the ports it chose,
// so that a restart reuses them. Requires s.mu held or s not yet shared.
func (s *Server) start() error {
	opts, err := s.options()
	if err != nil {
		return err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("embedded: start NATS server: %w", err)
	}
	ns.Start()
	if err := waitReady(ns, s.cfg.ReadyTimeout, !s.cfg.NoJetStream && s.cfg.ClusterName == ""); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return err
	}
	s.ns = ns
	if a, ok := ns.Addr().(*net.TCPAddr); ok {
		s.cfg.Port = a.Port
	}
	if a := ns.ClusterAddr(); a != nil {
		s.cfg.ClusterPort = a.Port
	}
	return nil
}

func (s *Server) options() (*server.Options, error) {
	c := s.cfg
	opts := &server.Options{
		ServerName: c.Name,
		Host:       c.Host,
		Port:       c.Port,
		NoLog:      true,
		NoSigs:     true,
		JetStream:  !c.NoJetStream,
		StoreDir:   c.StoreDir,
	}
	if c.ClusterName != "" {
		opts.Cluster = server.ClusterOpts{Name: c.ClusterName, Host: c.ClusterHost, Port: c.ClusterPort}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, invalidConfig("Routes", r, err.Error())
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	return opts, nil
}

// waitReady waits until ns accepts connections and, if js is set, until
// JetStream is enabled.
func waitReady(ns *server.Server, timeout time.Duration, js bool) error {
	deadline := time.Now().Add(timeout)
	if !ns.ReadyForConnections(timeout) {
		return fmt.Errorf("%w: not ready for connections after %v", ErrNotReady, timeout)
	}
	for js && !ns.JetStreamEnabled() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: JetStream not enabled after %v", ErrNotReady, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// ClientURL returns the URL clients connect to, such as
// "nats://127.0.0.1:4222".
func (s *Server) ClientURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return (&url.URL{Scheme: "nats", Host: net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))}).String()
}

// ClusterURL returns the route URL other servers use to reach this one,
// such as "nats-route://127.0.0.1:6222", or "" if it is not clustered.
func (s *Server) ClusterURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.ClusterName == "" {
		return ""
	}
	return routeURL(s.cfg.ClusterHost, s.cfg.ClusterPort)
}

// Config returns the server's configuration with the ports and store
// directory it actually uses.
func (s *Server) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cfg
	c.Routes = append([]string(nil), c.Routes...)
	return c
}

// running returns the running nats-server, or nil while it is stopped.
func (s *Server) running() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns
}

// HasSubscribers reports whether a client of the server subscribes to
// subject (a literal subject, matched against the subscriptions'
// wildcards), so that a test can wait until a subscriber is in place
// before it publishes. A stopped server has none.
func (s *Server) HasSubscribers(subject string) bool {
	ns := s.running()
	return ns != nil && ns.GlobalAccount().SubscriptionInterest(subject)
}

// Running reports whether the server is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns != nil
}

// Stop shuts the NATS server down and waits for it, keeping its ports and
// store directory for Restart. Stopping a stopped server is a no-op.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.ns == nil {
		return
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	s.ns = nil
}

// Restart starts the server again on the same ports and store directory,
// stopping it first if it is running. It returns ErrClosed after Shutdown.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.stopLocked()
	return s.start()
}

// Shutdown stops the server, waits for it, and removes the store directory
// if Start created it. It is idempotent.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	if s.closed {
		return
	}
	s.closed = true
	if s.tempDir {
		os.RemoveAll(s.cfg.StoreDir)
	}
}

// Cluster is a set of routed NATS servers in this process.
type Cluster struct {
	servers []*Server
}

// StartCluster starts n clustered servers, each with a unique name, store
// directory and ports and routes to all the others, and returns once
// JetStream has a meta leader and every server is current. cfg supplies the
// shared settings: Host, NoJetStream, ReadyTimeout (here 20 seconds by
// default) and ClusterName (default: a name of its own, "ratethrottle-"
// and random letters, so that no other cluster's route, such as one whose
// free port this cluster's restarted server now listens on, joins it);
// Name, ports and Routes are chosen per server, and a non-empty StoreDir is used as the parent of
// the servers' dirs. An n below 1 is refused with a *limiter.FieldError
// that unwraps to ErrInvalidConfig.
func StartCluster(n int, cfg Config) (*Cluster, error) {
	if n < 1 {
		return nil, invalidConfig("n", n, "must be at least 1")
	}
	base := "ratethrottle-" + randomName()
	if cfg.ClusterName == "" {
		cfg.ClusterName = base
	}
	cfg.setDefaults(20 * time.Second)
	// Route ports must be known before the servers start so that each can
	// list all the others; reserve free ones.
	ports, err := freePorts(cfg.ClusterHost, n)
	if err != nil {
		return nil, err
	}
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = routeURL(cfg.ClusterHost, p)
	}
	c := &Cluster{}
	for i := 0; i < n; i++ {
		sc := cfg
		sc.Name = fmt.Sprintf("%s-%d", base, i+1)
		sc.Port = -1
		sc.ClusterPort = ports[i]
		sc.Routes = append([]string(nil), routes...)
		if cfg.StoreDir != "" {
			sc.StoreDir = fmt.Sprintf("%s/%s", cfg.StoreDir, sc.Name)
		}
		s, err := Start(sc)
		if err != nil {
			c.Shutdown()
			return nil, fmt.Errorf("embedded: cluster server %d: %w", i+1, err)
		}
		c.servers = append(c.servers, s)
	}
	if err := c.WaitReady(cfg.ReadyTimeout); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// WaitReady waits until every running server is routed to the others,
// JetStream has a meta leader and every server is current.
func (c *Cluster) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c.ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: cluster not ready after %v", ErrNotReady, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Cluster) ready() bool {
	var running []*server.Server
	for _, s := range c.servers {
		if ns := s.running(); ns != nil {
			running = append(running, ns)
		}
	}
	leaders := 0
	for _, ns := range running {
		if ns.NumRoutes() < len(running)-1 {
			return false
		}
		if ns.JetStreamEnabled() || !c.servers[0].cfg.NoJetStream {
			if !ns.JetStreamEnabled() || !ns.JetStreamIsCurrent() {
				return false
			}
			if ns.JetStreamIsLeader() {
				leaders++
				if len(ns.JetStreamClusterPeers()) < len(c.servers) {
					return false
				}
			}
		}
	}
	return c.servers[0].cfg.NoJetStream || leaders == 1
}

// Servers returns the cluster's servers.
func (c *Cluster) Servers() []*Server { return append([]*Server(nil), c.servers...) }

// ClientURLs returns the client URL of every server.
func (c *Cluster) ClientURLs() []string {
	urls := make([]string, len(c.servers))
	for i, s := range c.servers {
		urls[i] = s.ClientURL()
	}
	return urls
}

// Shutdown shuts every server down. It is idempotent.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for _, s := range c.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Shutdown()
		}()
	}
	wg.Wait()
}

func routeURL(host string, port int) string {
	return (&url.URL{Scheme: "nats-route", Host: net.JoinHostPort(host, strconv.Itoa(port))}).String()
}

// freePorts reserves n distinct free TCP ports on host by listening on them
// at once, then releases them for the servers to bind.
func freePorts(host string, n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("embedded: reserve route port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// randomName returns 12 random lowercase letters and digits, 60 bits, to
// tell servers apart.
func randomName() string { return strings.ToLower(rand.Text()[:12]) }

// invalidConfig reports an invalid Config field.
func invalidConfig(field string, value any, reason string) error {
	return &limiter.FieldError{Field: field, Value: value, Reason: reason, Err: ErrInvalidConfig}
}
