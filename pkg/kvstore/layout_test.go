package kvstore

import (
	"testing"
	"unsafe"
)

// TestShardLayout checks the padding of the store's shards: each is one
// cache line, so that adjacent shards' locks never share a line.
func TestShardLayout(t *testing.T) {
	t.Parallel()
	for name, size := range map[string]uintptr{
		"gshard":    unsafe.Sizeof(gshard{}),
		"slotShard": unsafe.Sizeof(slotShard{}),
	} {
		if size != cacheLine {
			t.Errorf("%s is %d bytes, not one cache line (%d)", name, size, cacheLine)
		}
	}
}
