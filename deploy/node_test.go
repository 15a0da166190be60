package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is the node's output, written by the process and polled.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var (
	exportedOnce sync.Once
	exported     map[string]string // metric name -> type
	exportedErr  error
	exportedFrom string
)

// addrs finds the loopback addresses a node prints: its listeners' URLs
// and the addresses in its log lines.
var addrs = regexp.MustCompile(`(?:http://|addr=)(127\.0\.0\.1:\d+)`)

// nodeMetrics builds the node (../cmd/node), starts it on free loopback
// ports with its embedded NATS server, waits until it is ready and
// returns the metric families its /metrics exports, by name. /metrics is
// looked for on every address the node prints, so that it is found on
// the ops listener when the node has one (--ops-listen is then given a
// free port too) and on the public listener otherwise. The node runs
// once per test binary.
func nodeMetrics(t *testing.T) map[string]string {
	t.Helper()
	exportedOnce.Do(func() { exported, exportedFrom, exportedErr = scrapeNode() })
	if exportedErr != nil {
		t.Fatal(exportedErr)
	}
	t.Logf("metrics from %s", exportedFrom)
	return exported
}

func scrapeNode() (map[string]string, string, error) {
	dir, err := os.MkdirTemp("", "ratethrottle-deploy-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "node")
	build := exec.Command("go", "build", "-o", bin, "./cmd/node")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("go build ./cmd/node: %v\n%s", err, out)
	}
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	args := []string{"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--node-id", "deploy-test", "--data-dir", filepath.Join(dir, "data")}
	if bytes.Contains(help, []byte("-ops-listen")) {
		args = append(args, "--ops-listen", "127.0.0.1:0")
	}
	var out lockedBuffer
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return nil, "", fmt.Errorf("node exited:\n%s", out.String())
		default:
		}
		seen := map[string]bool{}
		for _, m := range addrs.FindAllStringSubmatch(out.String(), -1) {
			if seen[m[1]] {
				continue
			}
			seen[m[1]] = true
			url := "http://" + m[1] + "/metrics"
			body, ok := get(client, url)
			// Before the node is ready only ratethrottle_ready is reported.
			if ok && bytes.Contains(body, []byte("\nratethrottle_ready 1")) {
				fams, err := families(bytes.NewReader(body))
				return fams, url, err
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a process's output, bounded by deadline
	}
	return nil, "", fmt.Errorf("no ready /metrics on any address the node printed within 60s:\n%s", out.String())
}

func get(c *http.Client, url string) ([]byte, bool) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return b, err == nil && resp.StatusCode == http.StatusOK
}

// families reads the "# TYPE name type" lines of a text exposition.
func families(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no metric families in the exposition")
	}
	return out, sc.Err()
}

// seriesNames returns the names a PromQL selector may use for family
// name of type typ: the family itself, and for histograms and summaries
// their _bucket, _sum and _count series.
func seriesNames(fams map[string]string) map[string]bool {
	out := map[string]bool{}
	for name, typ := range fams {
		out[name] = true
		if typ == "histogram" || typ == "summary" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				out[name+s] = true
			}
		}
	}
	return out
}
