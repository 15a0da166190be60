package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/internal/nodetest"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
)

// nodeProc is a node binary running as a process against external NATS
// servers. Restarts reuse its HTTP port, so clients reconnect to the same
// address.
type nodeProc struct {
	t    *testing.T
	id   string
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *nodetest.Buffer // output of every run, for failure messages
	exited chan struct{}
	addr   string
	ops    string // operations listener (/metrics); moves on a restart
}

// nodeArgs are the settings every node of the suite runs with: loopback
// addresses, X-Forwarded-For believed from loopback (so that one machine
// can play many clients), no room limits, no closing for denials, debug
// logs off, refusals as HTTP statuses.
func nodeArgs(id string, urls []string, dataDir string) []string {
	return []string{
		"--node-id", id,
		"--listen", "127.0.0.1:0",
		"--ops-listen", "127.0.0.1:0",
		"--data-dir", dataDir,
		"--nats-url", strings.Join(urls, ","),
		"--trusted-proxies", "127.0.0.0/8",
		"--rooms", "",
		"--max-denials", "-1",
		"--reject-with-close=false",
		"--shutdown-timeout", "5s",
		"--log-level", "warn",
	}
}

// startNode starts the node binary with nodeArgs plus extra and waits
// until it is ready. Cleanup kills it if it still runs.
func startNode(t *testing.T, id string, urls []string, extra ...string) *nodeProc {
	t.Helper()
	n := &nodeProc{t: t, id: id, out: &nodetest.Buffer{}, args: append(nodeArgs(id, urls, t.TempDir()), extra...)}
	t.Cleanup(func() {
		n.kill()
		if strings.Contains(n.out.String(), "panic:") {
			t.Errorf("node %s panicked:\n%s", id, n.out.String())
		}
	})
	n.start()
	return n
}

// start runs the process and waits for its address and /readyz.
func (n *nodeProc) start() {
	t := n.t
	t.Helper()
	from := len(n.out.String()) // this run's output starts here
	cmd := exec.Command(nodetest.Binary(t), n.args...)
	cmd.Dir = t.TempDir()
	cmd.Env = cleanEnv()
	cmd.Stdout = n.out
	cmd.Stderr = n.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	var addr string
	waitFor(t, 30*time.Second, "node "+n.id+" to print its address", func() bool {
		select {
		case <-exited:
			t.Fatalf("node %s exited early:\n%s", n.id, n.out.String())
		default:
		}
		var ok bool
		addr, ok = nodetest.Addr(n.out.String()[from:])
		return ok
	})
	ops, _ := nodetest.OpsAddr(n.out.String()[from:])
	n.mu.Lock()
	n.addr, n.ops = addr, ops
	n.mu.Unlock()
	// A restart listens where the first run did.
	for i, a := range n.args[:len(n.args)-1] {
		if a == "--listen" {
			n.args[i+1] = addr
		}
	}
	waitFor(t, 30*time.Second, "node "+n.id+" to be ready", func() bool {
		code, _ := httpGet("http://" + addr + "/readyz")
		return code == http.StatusOK
	})
}

// Addr returns the node's HTTP address.
func (n *nodeProc) Addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addr
}

// running reports whether the process is up.
func (n *nodeProc) running() bool {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// term stops the node gracefully (SIGTERM) and waits for it, killing it if
// it has not exited within 15 seconds.
func (n *nodeProc) term() {
	n.signal(syscall.SIGTERM, 15*time.Second)
}

// kill kills the node with SIGKILL and waits for it. It is a no-op on a
// stopped node.
func (n *nodeProc) kill() {
	n.signal(syscall.SIGKILL, 10*time.Second)
}

func (n *nodeProc) signal(sig syscall.Signal, wait time.Duration) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(wait):
		n.t.Errorf("node %s did not exit within %v of %v:\n%s", n.id, wait, sig, n.out.String())
		_ = cmd.Process.Kill()
		<-exited
	}
}

// restart starts a stopped node again under the same ID and address.
func (n *nodeProc) restart() {
	n.t.Helper()
	if n.running() {
		n.t.Fatalf("restart of running node %s", n.id)
	}
	n.start()
}

// fds returns the number of open file descriptors of the process, from
// /proc/<pid>/fd.
func (n *nodeProc) fds() int {
	n.t.Helper()
	n.mu.Lock()
	pid := n.cmd.Process.Pid
	n.mu.Unlock()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		n.t.Fatalf("fds of node %s: %v", n.id, err)
	}
	return len(ents)
}

// metrics scrapes /metrics and returns the unlabelled samples and the
// labelled ones under their full name, such as
// `ratethrottle_decisions_total{reason="ok"}`.
func (n *nodeProc) metrics() map[string]float64 {
	n.t.Helper()
	n.mu.Lock()
	ops := n.ops
	n.mu.Unlock()
	code, body := httpGet("http://" + ops + "/metrics")
	if code != http.StatusOK {
		n.t.Fatalf("metrics of node %s: HTTP %d", n.id, code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// cleanEnv returns the environment without RATETHROTTLE_ variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RATETHROTTLE_") {
			env = append(env, kv)
		}
	}
	return env
}

// httpClient makes no keep-alive connections, so that scraping a node does
// not hold a descriptor in it or a goroutine here.
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// httpGet returns the status and body of GET url, or status 0 when the
// request fails.
func httpGet(url string) (int, string) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startNATS starts one embedded NATS server with JetStream in the test
// process; cleanup shuts it down.
func startNATS(t *testing.T) *embedded.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// startNATSCluster starts three clustered embedded NATS servers in the
// test process; cleanup shuts them down.
func startNATSCluster(t *testing.T) *embedded.Cluster {
	t.Helper()
	c, err := embedded.StartCluster(3, embedded.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// dialNATS connects to urls (in order, no shuffling) with quick reconnects;
// cleanup closes the connection.
func dialNATS(t *testing.T, urls ...string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond), nats.RetryOnFailedConnect(true), nats.Timeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ctxFor returns a context that ends after d or at cleanup.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fdSettle bounds how long a node may take to close the descriptors of
// connections that have ended (its WebSocket close handshake is bounded by
// wshandler's 5 s CloseTimeout; in practice it is milliseconds).
const fdSettle = 10 * time.Second

// checkFDs records the node's open descriptors now and, at cleanup (before
// the cleanups registered earlier, so after the clients dialled later have
// closed), checks that the count returns to at most that baseline within
// fdSettle.
func (n *nodeProc) checkFDs() {
	t := n.t
	t.Helper()
	base := n.fds()
	t.Cleanup(func() {
		if !n.running() {
			return
		}
		deadline := time.Now().Add(fdSettle)
		for {
			got := n.fds()
			if got <= base {
				t.Logf("node %s: %d descriptors, baseline %d", n.id, got, base)
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("node %s holds %d descriptors %v after the scenario, baseline %d", n.id, got, fdSettle, base)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
