package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/internal/wait"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/ratethrottle/ratethrottle/internal/nodetest"
)

// TestMain removes the node binary the tests built and, when every test
// passed, fails the run if a goroutine is left behind. Two goroutines of the
// embedded nats-server are let pass: in-process nodes started and stopped
// many times under load now and then leave one stream file store's
// state-flush loop, and the access-time service it registered, running
// after the node's server has shut down (Shutdown and WaitForShutdown have
// returned); each test run alone leaves nothing. The node's own goroutines
// are all still checked.
func TestMain(m *testing.M) {
	code := m.Run()
	nodetest.Cleanup()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
			goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// waitAddr waits until out holds the line that names the HTTP addresses,
// and returns the public one and the operations one ("" when off).
func waitAddr(t *testing.T, out *nodetest.Buffer, exited <-chan struct{}) (string, string) {
	t.Helper()
	var addr string
	waitFor(t, 30*time.Second, "the node to print its address", func() bool {
		select {
		case <-exited:
			t.Fatalf("node exited early:\n%s", out.String())
		default:
		}
		var ok bool
		addr, ok = nodetest.Addr(out.String())
		return ok
	})
	ops, _ := nodetest.OpsAddr(out.String())
	return addr, ops
}

// waitFor polls a condition with a deadline (internal/wait).
var waitFor = wait.For

// proc is a node started as a subprocess.
type proc struct {
	cmd    *exec.Cmd
	out    *nodetest.Buffer
	addr   string
	ops    string // operations listener; "" when off
	exited chan struct{}
	err    error
}

// cleanEnv returns the environment without RATETHROTTLE_ variables, plus
// extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// startProc starts the node binary in dir with args and env (added to a
// clean environment) and waits for its address. The process is stopped at
// cleanup: SIGTERM, then SIGKILL if it has not exited within 15 seconds.
func startProc(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &nodetest.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(nodetest.Binary(t), args...)
	p.cmd.Dir = dir
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(t) })
	p.addr, p.ops = waitAddr(t, p.out, p.exited)
	return p
}

// stop sends SIGTERM and waits for the process, killing it after a
// deadline. It is idempotent.
func (p *proc) stop(t *testing.T) error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("node did not stop on SIGTERM within 15s:\n%s", p.out.String())
	}
	return p.err
}

// inProc is a node run in the test process through run.
type inProc struct {
	out  *nodetest.Buffer
	addr string
	ops  string // operations listener; "" when off
	done chan error
}

// startInProcess runs the node with args in the test's process, in a
// temporary working directory for its data, with every listener on a free
// loopback port, until cleanup.
func startInProcess(t *testing.T, args ...string) *inProc {
	t.Helper()
	dir := t.TempDir()
	args = append([]string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	n := &inProc{out: &nodetest.Buffer{}, done: make(chan error, 1)}
	exited := make(chan struct{})
	go func() {
		n.done <- run(ctx, args, nil, n.out)
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("run did not return within 20s of cancel:\n%s", n.out.String())
		}
	})
	n.addr, n.ops = waitAddr(t, n.out, exited)
	return n
}

// natsConn connects to the node's embedded NATS server, whose address it
// reads from the node's log, until the test ends.
func (n *inProc) natsConn(t *testing.T) *nats.Conn {
	t.Helper()
	m := regexp.MustCompile(`embedded NATS server started"? url=(nats://\S+)`).FindStringSubmatch(n.out.String())
	if m == nil {
		t.Fatalf("no embedded NATS URL in the output:\n%s", n.out.String())
	}
	nc, err := nats.Connect(m[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	return httpDo(t, http.MethodGet, url, "", header...)
}

func httpDo(t *testing.T, method, url, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	waitFor(t, timeout, addr+" to be ready", func() bool {
		resp, err := c.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// wsClient is a test client of the room protocol.
type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
}

// dialWS opens /ws on addr. It returns the close error instead of failing
// when the server refuses the connection with a close frame.
func dialWS(t *testing.T, addr string) (*wsClient, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %d", resp.StatusCode)
		}
		return nil, err
	}
	t.Cleanup(func() { ws.Close() })
	return &wsClient{t: t, ws: ws}, nil
}

func (c *wsClient) send(v any) error {
	b, _ := json.Marshal(v)
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// read returns the next frame, decoded, or the error that ended the
// connection (a *websocket.CloseError for a close frame).
func (c *wsClient) read(timeout time.Duration) (map[string]any, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("frame %q: %v", b, err)
	}
	return m, nil
}

// join joins room and waits for the joined frame.
func (c *wsClient) join(room string) {
	c.t.Helper()
	if err := c.send(map[string]any{"type": "join", "room": room}); err != nil {
		c.t.Fatal(err)
	}
	c.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "joined" && f["room"] == room })
}

// expect reads frames until match accepts one, failing on timeout or a
// closed connection.
func (c *wsClient) expect(timeout time.Duration, match func(map[string]any) bool) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			c.t.Fatal("timed out waiting for a frame")
		}
		f, err := c.read(left)
		if err != nil {
			c.t.Fatalf("waiting for a frame: %v", err)
		}
		if match(f) {
			return f
		}
	}
}

// uniqueClusterName returns a NATS cluster name no other test uses. The
// route ports of a test's cluster are free ports picked before its nodes
// start, so another test's server can take one in between (or while a
// node restarts); NATS refuses a route between clusters of different
// names, so two tests' clusters never merge into one and share a KV
// bucket, whatever ports they end up on.
func uniqueClusterName(t *testing.T) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "test-" + hex.EncodeToString(b[:])
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lines returns the lines of s that contain sub.
func lines(s, sub string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// runBinary runs the node binary with args in a temporary directory until
// it exits, for at most 20 seconds, and returns its output.
func runBinary(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodetest.Binary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// joinOutcome sends a join for room and returns "joined", or the reason of
// the 1008 close that refuses the connection, after checking that the
// error frame sent before the close names the same reason and the wait.
func (c *wsClient) joinOutcome(room string) string {
	c.t.Helper()
	if err := c.send(map[string]any{"type": "join", "room": room}); err != nil {
		return err.Error()
	}
	var refusal map[string]any
	for range 3 {
		f, err := c.read(10 * time.Second)
		var ce *websocket.CloseError
		switch {
		case err == nil && f["type"] == "joined":
			return "joined"
		case err == nil && f["type"] == "error" && refusal == nil:
			refusal = f
		case errors.As(err, &ce) && ce.Code == websocket.ClosePolicyViolation:
			if refusal == nil || refusal["error"] != ce.Text {
				c.t.Errorf("close 1008 %q came after error frame %v, want one naming the same reason", ce.Text, refusal)
			}
			return ce.Text
		default:
			return fmt.Sprintf("frame %v, error %v", f, err)
		}
	}
	return "no join answer or close in 3 frames"
}
