package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/internal/wait"
)

// TestPolicyVerb stores a policy through the tool against a real node that
// started without one, sees the node apply it, reads it back, and is
// refused a stale revision and an invalid document.
func TestPolicyVerb(t *testing.T) {
	t.Parallel()
	n := startNode(t, "policy-node")
	envs := natsEnv(n.nats)
	if r := cli(t, envs, "policy", "get"); r.code != exitNotFound || !strings.Contains(r.stderr, "no policy") {
		t.Fatalf("get before any set: %+v", r)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("limits:\n  messages_per_minute: 77\n  max_message_size: 4096\nclasses:\n  typing:\n    rate: 30\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, envs, "policy", "set", good); r.code != 0 || !strings.Contains(r.stdout, "stored revision 1") {
		t.Fatalf("set: %+v", r)
	}
	wait.For(t, 5*time.Second, "the node to apply the policy", func() bool {
		r := cli(t, envs, "stats", "--json")
		return r.code == 0 && strings.Contains(r.stdout, `"messages_per_minute": 77`)
	})
	r := cli(t, envs, "policy", "get")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "# revision 1, changed by cli@") || !strings.Contains(r.stdout, "messages_per_minute: 77") {
		t.Fatalf("get: %+v", r)
	}
	if r := cli(t, envs, "policy", "set", good, "--if-match", "7"); r.code != exitFailed || !strings.Contains(r.stderr, "stored revision is 1") {
		t.Errorf("stale set: %+v", r)
	}
	if r := cli(t, envs, "policy", "set", good, "--if-match", "1"); r.code != 0 || !strings.Contains(r.stdout, "stored revision 2") {
		t.Errorf("set at the current revision: %+v", r)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("classes:\n  typing:\n    rate: 30\n    burts: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, envs, "policy", "set", bad); r.code != exitFailed || !strings.Contains(r.stderr, "classes.typing.burts") {
		t.Errorf("invalid set: %+v", r)
	}
	if r := cli(t, envs, "policy", "get"); !strings.HasPrefix(r.stdout, "# revision 2,") {
		t.Errorf("an invalid set changed the policy: %+v", r)
	}
	if r := cli(t, envs, "policy"); r.code != exitUsage {
		t.Errorf("no sub-verb: %+v", r)
	}
}
