package limiter

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

const connShards = 64

// conn is the Limiter's state for one registered connection.
type conn struct {
	id, client  string
	connectedAt time.Time
	meta        map[string]string
	slotted     bool   // holds a concurrent-connection slot to release
	tier        string // meta[MetaTier]: whose limits apply
	// lv caches the limits of tier (liveLimits.of), valid while lv.top is
	// the Limiter's live value: a message looks its tier up once per
	// limits change, not per message (Limiter.limitsOf).
	lv atomic.Pointer[liveLimits]

	mu      sync.Mutex // guards the fields below
	msgs    Bucket     // PerConnection scope only
	bytes   Bucket     // PerConnection scope only
	count   int64
	nbytes  int64
	lastMsg time.Time
}

// registry maps connection IDs to connections and clients to their local
// connection counts, in shards.
type registry struct {
	seed    maphash.Seed
	conns   [connShards]connShard
	clients [connShards]clientShard
}

type connShardData struct {
	mu sync.RWMutex
	m  map[string]*conn
}

// connShard is padded to whole cache lines so that no two shards' locks
// share one; TestMemoryStoreLayout checks it.
type connShard struct {
	// The padding comes first: Go lengthens a struct that ends in a
	// field of size zero.
	_ [(cacheLine - unsafe.Sizeof(connShardData{})%cacheLine) % cacheLine]byte
	connShardData
}

type clientShardData struct {
	mu sync.Mutex
	m  map[string]int
}

// clientShard is padded like connShard.
type clientShard struct {
	_ [(cacheLine - unsafe.Sizeof(clientShardData{})%cacheLine) % cacheLine]byte
	clientShardData
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.conns {
		r.conns[i].m = make(map[string]*conn)
		r.clients[i].m = make(map[string]int)
	}
	return r
}

func (r *registry) connShard(id string) *connShard {
	return &r.conns[maphash.String(r.seed, id)%connShards]
}

func (r *registry) clientShard(client string) *clientShard {
	return &r.clients[maphash.String(r.seed, client)%connShards]
}

func (r *registry) get(id string) *conn {
	sh := r.connShard(id)
	sh.mu.RLock()
	c := sh.m[id]
	sh.mu.RUnlock()
	return c
}

// add registers c unless its ID is taken.
func (r *registry) add(c *conn) bool {
	sh := r.connShard(c.id)
	sh.mu.Lock()
	if _, dup := sh.m[c.id]; dup {
		sh.mu.Unlock()
		return false
	}
	sh.m[c.id] = c
	sh.mu.Unlock()

	cs := r.clientShard(c.client)
	cs.mu.Lock()
	cs.m[c.client]++
	cs.mu.Unlock()
	return true
}

// remove unregisters the connection id and returns it, or nil.
func (r *registry) remove(id string) *conn {
	sh := r.connShard(id)
	sh.mu.Lock()
	c := sh.m[id]
	delete(sh.m, id)
	sh.mu.Unlock()
	if c == nil {
		return nil
	}
	cs := r.clientShard(c.client)
	cs.mu.Lock()
	if n := cs.m[c.client]; n > 1 {
		cs.m[c.client] = n - 1
	} else {
		delete(cs.m, c.client)
	}
	cs.mu.Unlock()
	return c
}

func (r *registry) clientCount(client string) int {
	cs := r.clientShard(client)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.m[client]
}

// each calls f for every registered connection, one shard at a time.
func (r *registry) each(f func(*conn)) {
	for i := range r.conns {
		sh := &r.conns[i]
		sh.mu.RLock()
		for _, c := range sh.m {
			f(c)
		}
		sh.mu.RUnlock()
	}
}

// counts returns the number of connections and of distinct clients.
func (r *registry) counts() (conns, clients int) {
	for i := range r.conns {
		sh := &r.conns[i]
		sh.mu.RLock()
		conns += len(sh.m)
		sh.mu.RUnlock()
		cs := &r.clients[i]
		cs.mu.Lock()
		clients += len(cs.m)
		cs.mu.Unlock()
	}
	return conns, clients
}
