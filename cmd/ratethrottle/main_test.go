package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ratethrottle/ratethrottle/internal/nodetest"
	"github.com/ratethrottle/ratethrottle/internal/wait"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
)

func TestMain(m *testing.M) { nodetest.Main(m) }

// result is what one run of the tool printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the tool in-process with a clean environment plus envs
// (KEY=VALUE), bounded by 30 seconds.
func cli(t *testing.T, envs []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cliCtx(ctx, envs, args...)
}

func cliCtx(ctx context.Context, envs []string, args ...string) result {
	var out, errb nodetest.Buffer
	m := map[string]string{}
	for _, kv := range envs {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	code := run(ctx, args, env{stdout: &out, stderr: &errb, getenv: func(k string) string { return m[k] }})
	return result{code, out.String(), errb.String()}
}

// natsEnv points the tool at url through the environment, as an operator
// would.
func natsEnv(url string) []string { return []string{"RATETHROTTLE_NATS_URL=" + url} }

// startNATS starts an embedded NATS server with JetStream, and no node.
func startNATS(t *testing.T) *embedded.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// node is a real node process with its embedded NATS server.
type node struct {
	id, http, nats string
	cmd            *exec.Cmd
	out            *nodetest.Buffer
	exited         chan struct{}
}

var (
	opsOnce sync.Once
	opsFlag bool
)

// hasOpsListen reports whether the node binary has the --ops-listen flag
// (the separate operations listener); a node with it gets a free loopback
// port there so that parallel nodes do not collide on its default.
func hasOpsListen(t *testing.T) bool {
	opsOnce.Do(func() {
		out, _ := exec.Command(nodetest.Binary(t), "--help").CombinedOutput()
		opsFlag = bytes.Contains(out, []byte("-ops-listen"))
	})
	return opsFlag
}

var natsURLLine = regexp.MustCompile(`embedded NATS server started.*?url=(nats://\S+)`)

// startNode starts the node binary on free loopback ports, with an
// embedded NATS server, and waits until it is ready.
func startNode(t *testing.T, id string, extra ...string) *node {
	t.Helper()
	args := []string{"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--node-id", id, "--data-dir", t.TempDir()}
	if hasOpsListen(t) {
		args = append(args, "--ops-listen", "127.0.0.1:0")
	}
	n := &node{id: id, out: &nodetest.Buffer{}, exited: make(chan struct{})}
	n.cmd = exec.Command(nodetest.Binary(t), append(args, extra...)...)
	n.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	})
	wait.For(t, 30*time.Second, "node "+id+" to listen", func() bool {
		select {
		case <-n.exited:
			t.Fatalf("node %s exited:\n%s", id, n.out.String())
		default:
		}
		var ok bool
		n.http, ok = nodetest.Addr(n.out.String())
		m := natsURLLine.FindStringSubmatch(n.out.String())
		if m != nil {
			n.nats = m[1]
		}
		return ok && m != nil
	})
	wait.For(t, 30*time.Second, "node "+id+" to be ready", func() bool {
		resp, err := http.Get("http://" + n.http + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return n
}

func TestUsageAndExitCodes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "no verb"},
		{[]string{"frobnicate"}, exitUsage, `unknown verb "frobnicate"`},
		{[]string{"--help"}, exitOK, "Exit status"},
		{[]string{"bans"}, exitUsage, "missing sub-verb"},
		{[]string{"bans", "add"}, exitUsage, "missing CLIENT"},
		{[]string{"bans", "add", "a", "b"}, exitUsage, `unexpected argument "b"`},
		{[]string{"bans", "add", "a", "--for", "-1s"}, exitUsage, "--for -1s"},
		{[]string{"bans", "add", "a", "--for", "soon"}, exitUsage, "invalid value"},
		{[]string{"bans", "purge"}, exitUsage, `unknown sub-verb "purge"`},
		{[]string{"events"}, exitUsage, "missing sub-verb"},
		{[]string{"events", "tail", "--type", "message_rate,nope"}, exitUsage, `--type "nope"`},
		{[]string{"stats", "--wait", "0s"}, exitUsage, "--wait"},
		{[]string{"top", "--interval", "1ms"}, exitUsage, "--interval"},
		{[]string{"stats", "--nats-token", "x", "--nats-user", "u"}, exitUsage, "--nats-token"},
		{[]string{"stats", "--nats-password", "p"}, exitUsage, "--nats-password"},
		{[]string{"stats", "--nats-tls-cert", "c"}, exitUsage, "--nats-tls-key"},
		{[]string{"stats", "--events-prefix", "a.*"}, exitUsage, "--events-prefix"},
		{[]string{"top", "--limit", "0"}, exitUsage, "--limit"},
		{[]string{"events", "keep", "--replicas", "7"}, exitUsage, "--replicas"},
	} {
		r := cli(t, nil, c.args...)
		if r.code != c.code || !strings.Contains(r.stdout+r.stderr, c.want) {
			t.Errorf("%q: exit %d, want %d with %q; stderr:\n%s", c.args, r.code, c.code, c.want, r.stderr)
		}
	}
	// Every verb has --help, on stdout, exit 0.
	for _, args := range [][]string{{"bans", "--help"}, {"bans", "list", "--help"}, {"bans", "add", "--help"}, {"bans", "rm", "-h"},
		{"events", "--help"}, {"events", "tail", "--help"}, {"events", "keep", "--help"}, {"stats", "--help"}, {"top", "--help"}} {
		r := cli(t, nil, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "Usage: ratethrottle "+args[0]) || !strings.Contains(r.stdout, "-nats-url") {
			t.Errorf("%q: exit %d, stdout:\n%s", args, r.code, r.stdout)
		}
	}
	// The secrets from the environment never show in --help.
	r := cli(t, []string{"RATETHROTTLE_NATS_PASSWORD=hunter2secret", "RATETHROTTLE_NATS_TOKEN=tok3n"}, "stats", "--help")
	if strings.Contains(r.stdout, "hunter2secret") || strings.Contains(r.stdout, "tok3n") {
		t.Errorf("--help shows a secret:\n%s", r.stdout)
	}
}

func TestUnreachableNATS(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: a server started and shut down.
	srv := startNATS(t)
	url := srv.ClientURL()
	srv.Shutdown()
	for _, args := range [][]string{{"bans", "list"}, {"stats"}, {"events", "tail"}, {"top", "--once"}} {
		r := cli(t, natsEnv(url), append(args, "--timeout", "500ms")...)
		if r.code != exitUnreachable || !strings.Contains(r.stderr, "connect to NATS at") {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	// Credentials refused: a server that wants a token.
	auth, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, Authorization: "s3cret-token", NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go auth.Start()
	defer auth.Shutdown()
	if !auth.ReadyForConnections(5 * time.Second) {
		t.Fatal("auth server not ready")
	}
	r := cli(t, natsEnv(auth.ClientURL()), "stats", "--timeout", "1s")
	if r.code != exitUnreachable || !strings.Contains(r.stderr, "uthorization") {
		t.Errorf("wrong token: exit %d, stderr %q", r.code, r.stderr)
	}
	// The right token from the environment: connected, and no node answers.
	r = cli(t, append(natsEnv(auth.ClientURL()), "RATETHROTTLE_NATS_TOKEN=s3cret-token"), "stats", "--wait", "100ms")
	if r.code != exitNotFound || !strings.Contains(r.stderr, "no node answered") {
		t.Errorf("right token: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestInterrupted: a verb waiting when the process is told to stop exits
// 130 and says so.
func TestInterrupted(t *testing.T) {
	t.Parallel()
	srv := startNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() { done <- cliCtx(ctx, natsEnv(srv.ClientURL()), "events", "tail") }()
	// Cancel once the tail is subscribed to violations and bans.
	wait.For(t, 5*time.Second, "the tail to subscribe", func() bool {
		return srv.HasSubscribers("ratethrottle.violations.message_rate.x") && srv.HasSubscribers("ratethrottle.bans.x")
	})
	cancel()
	r := <-done
	if r.code != exitInterrupted || strings.TrimSpace(r.stderr) != "ratethrottle: interrupted" {
		t.Errorf("interrupted tail: %+v", r)
	}
}
