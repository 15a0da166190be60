package kvstore

import (
	"testing"

	"github.com/ratethrottle/ratethrottle/internal/wait"

	"github.com/nats-io/nats.go"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor polls a condition with a deadline (internal/wait).
var waitFor = wait.For

func dialBench(b *testing.B, url string) *nats.Conn {
	b.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	return nc
}
