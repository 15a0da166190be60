package kvstore

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportBoundaries checks, with the go tool, what the library's
// packages link outside their tests: the store not nats-server (a program
// using it against an external NATS needs the client alone; the server is
// in package embedded), the core limiter and the token encoder the
// standard library alone (so nothing that knows of NATS).
func TestImportBoundaries(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH:", err)
	}
	const mod = "github.com/ratethrottle/ratethrottle/"
	cases := []struct {
		pkg       string
		forbidden func(dep string) bool
		what      string
	}{
		{"pkg/kvstore", natsServer, "the NATS server"},
		{"pkg/limiter", nonStandard, "a package outside the standard library"},
		{"pkg/subject", nonStandard, "a package outside the standard library"},
	}
	for _, c := range cases {
		out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", mod+c.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", c.pkg, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) == 0 {
			t.Fatalf("go list -deps %s listed nothing", c.pkg)
		}
		for _, dep := range deps {
			if dep != mod+c.pkg && c.forbidden(dep) {
				t.Errorf("%s links %s, %s", c.pkg, dep, c.what)
			}
		}
	}
}

// nonStandard reports whether a dependency listed without the standard
// library is anything but a package of this module.
func nonStandard(dep string) bool {
	return !strings.HasPrefix(dep, "github.com/ratethrottle/ratethrottle/")
}

// natsServer reports whether a dependency is part of nats-server.
func natsServer(dep string) bool {
	return strings.HasPrefix(dep, "github.com/nats-io/nats-server/")
}
