// Package nodetest holds what the tests that run the node binary as a
// process share: building it once per test binary, a concurrency-safe
// output buffer, and reading the address the node prints.
package nodetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// nodePackage is the import path of the node binary.
const nodePackage = "github.com/ratethrottle/ratethrottle/cmd/node"

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

// Binary returns the path of the node binary, building it on first use.
// Main, or Cleanup from a TestMain of its own, removes it.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ratethrottle-node-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "node")
		if out, err := exec.Command("go", "build", "-o", binPath, nodePackage).CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build %s: %v\n%s", nodePackage, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Cleanup removes the binary Binary built, if any.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// Main runs a package's tests, removes the binary Binary built, and, when
// every test passed, fails the run if a goroutine is left behind. Call it
// from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Buffer is a bytes.Buffer safe for one writer and many readers: a
// process's output that a test polls.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var openLine = regexp.MustCompile(`open http://([^/\s]+)/`)

var opsLine = regexp.MustCompile(`operations on http://([^/\s]+)/`)

// OpsAddr returns the host:port of the operations listener named on the
// node's "open" line, and false until out holds it or when the node runs
// without one.
func OpsAddr(out string) (string, bool) {
	if m := opsLine.FindStringSubmatch(out); m != nil {
		return m[1], true
	}
	return "", false
}

// Addr returns the host:port of the "open http://…/" line the node prints
// once it listens, and false until out holds it.
func Addr(out string) (string, bool) {
	if m := openLine.FindStringSubmatch(out); m != nil {
		return m[1], true
	}
	return "", false
}
