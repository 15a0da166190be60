package limiter

import (
	"testing"
	"unsafe"
)

// TestRegistryLayout checks the padding of the registry's shards: each is
// one cache line, so that adjacent shards' locks never share a line.
func TestRegistryLayout(t *testing.T) {
	t.Parallel()
	for name, size := range map[string]uintptr{
		"connShard":   unsafe.Sizeof(connShard{}),
		"clientShard": unsafe.Sizeof(clientShard{}),
	} {
		if size != cacheLine {
			t.Errorf("%s is %d bytes, not one cache line (%d)", name, size, cacheLine)
		}
	}
}
