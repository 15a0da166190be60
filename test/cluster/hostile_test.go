package cluster

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

const (
	// peakBytesPerClient bounds the heap a Limiter holds per distinct
	// client seen within one refill period (its buckets and map entries).
	peakBytesPerClient = 1024
	// residualHeap bounds the heap left once every client's buckets have
	// refilled and the store has swept them, whatever the count of
	// clients seen.
	residualHeap = 8 << 20
)

// heapInuse returns the heap in use after a full collection.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestMillionClientIDs sends distinct client IDs through a Limiter at a
// bounded rate of simulated time (one new client every 10 µs: 100,000 a
// second, a million in 10 s of limiter time): each connects, sends one
// message and leaves. The heap grows by at most peakBytesPerClient per
// client held, and once the buckets have refilled and the store sweeps,
// it returns to within residualHeap of its baseline. The default run
// sends 200,000 IDs; RATETHROTTLE_LONG=1 a million.
func TestMillionClientIDs(t *testing.T) {
	checkGoroutines(t)
	ids := pick(200_000, 1_000_000)
	var clock atomic.Int64
	t0 := time.Now()
	now := func() time.Time { return t0.Add(time.Duration(clock.Load())) }
	store := limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1, Now: now})
	t.Cleanup(func() { store.Close() })
	lim, err := limiter.New(limiter.Config{Limits: limiter.Moderate(), Store: store, Slots: store, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lim.Close() })
	ctx := context.Background()
	base := heapInuse()
	start := time.Now()
	for i := range ids {
		clock.Add(int64(10 * time.Microsecond))
		client := fmt.Sprintf("client-%d.*>:%d", i, i) // subject-hostile characters too
		conn := "c" + client
		d, err := lim.Connect(ctx, conn, client, nil)
		if err != nil || !d.Allowed {
			t.Fatalf("client %d: %v %v", i, d.Reason, err)
		}
		if d := lim.CheckMessage(ctx, conn, 100); !d.Allowed {
			t.Fatalf("client %d message: %v", i, d.Reason)
		}
		if err := lim.UnregisterConnection(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	peak := heapInuse()
	buckets, clients := store.Len()
	growth := int64(peak) - int64(base)
	t.Logf("%d IDs in %v: %d buckets, %d clients with slots held; heap +%d KB (%d B per ID, bound %d)",
		ids, time.Since(start).Round(time.Millisecond), buckets, clients, growth>>10, growth/int64(ids), peakBytesPerClient)
	if growth > int64(ids)*peakBytesPerClient {
		t.Errorf("heap grew %d B for %d IDs, bound %d B per ID", growth, ids, peakBytesPerClient)
	}
	if clients != 0 {
		t.Errorf("%d clients still hold slots after every connection left", clients)
	}
	// A minute and a bit later every bucket has refilled; a sweep drops
	// them all.
	clock.Add(int64(2 * time.Minute))
	dropped := store.Sweep(now())
	after := heapInuse()
	buckets, _ = store.Len()
	t.Logf("sweep dropped %d buckets, %d left; heap %+d KB against the baseline (bound %d KB)",
		dropped, buckets, (int64(after)-int64(base))>>10, residualHeap>>10)
	if buckets != 0 {
		t.Errorf("%d buckets left after they all refilled", buckets)
	}
	if int64(after)-int64(base) > residualHeap {
		t.Errorf("heap %d B above the baseline after the sweep, bound %d", int64(after)-int64(base), residualHeap)
	}
}

// TestManyClientIDsClusterStore does the same against a kvstore.Store on
// an embedded NATS server, in real time: each distinct client spends one
// message token of a Global bucket, which the store flushes to KV. It
// must neither fail nor grow the heap beyond peakBytesPerClient per ID
// plus what NATS holds. The default run sends 20,000 IDs;
// RATETHROTTLE_LONG=1 a million (about a minute).
func TestManyClientIDsClusterStore(t *testing.T) {
	checkGoroutines(t)
	ids := pick(20_000, 1_000_000)
	ns := startNATS(t)
	nc := dialNATS(t, ns.ClientURL())
	ctx := ctxFor(t, 5*time.Minute)
	s, err := kvstore.New(ctx, kvstore.Config{Conn: nc, NodeID: "hostile", Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	spec := limiter.Moderate().MessageSpec()
	base := heapInuse()
	start := time.Now()
	for i := range ids {
		key := limiter.Key{Kind: limiter.KindMessages, ID: fmt.Sprintf("kv-client-%d.>*", i)}
		r, err := s.Take(ctx, key, spec, time.Now(), 1)
		if err != nil || !r.OK {
			t.Fatalf("client %d: %+v %v", i, r, err)
		}
		if i%10_000 == 9_999 {
			time.Sleep(10 * time.Millisecond) // bounded rate: at most 10,000 new IDs per flush
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The sync loop may be flushing some of them at the same time.
	waitFor(t, 30*time.Second, "every bucket to be written", func() bool { return s.Stats().KVWrites >= int64(ids) })
	growth := int64(heapInuse()) - int64(base)
	st := s.Stats()
	t.Logf("%d IDs in %v: %d KV writes, %d write errors; heap +%d KB (%d B per ID, bound %d incl. NATS)",
		ids, time.Since(start).Round(time.Millisecond), st.KVWrites, st.WriteErrors, growth>>10, growth/int64(ids), 4*peakBytesPerClient)
	if st.WriteErrors != 0 {
		t.Errorf("%d KV write errors", st.WriteErrors)
	}
	// The store, the client connection and the in-process server's
	// stream of ids entries all grow with the IDs.
	if growth > int64(ids)*4*peakBytesPerClient {
		t.Errorf("heap grew %d B for %d IDs", growth, ids)
	}
}

// hostileRooms are room names that must work, and stay apart, across
// nodes although they hold subject and key syntax, spaces, unicode or are
// as long as allowed.
var hostileRooms = []string{
	"*", ">", "a.b", "a.*", "a.>", "$KV.ratethrottle.>", "ratethrottle.rooms.>", " ", "a b", "../..",
	"日本語", "🙂", "\u200b", "a\\b", `"quoted"`, strings.Repeat("x", 128), strings.Repeat("é", 64),
}

// invalidRooms must be refused with invalid_room.
var invalidRooms = []string{"", strings.Repeat("x", 129), "bell\a", "nul\x00", "line\nbreak", "\xff\xfe"}

// malformedFrames are frames that must each be answered with an error
// frame, leaving the connection open.
var malformedFrames = []struct {
	typ  int
	data string
}{
	{websocket.TextMessage, "not json"},
	{websocket.TextMessage, "[1,2,3]"},
	{websocket.TextMessage, "null"},
	{websocket.TextMessage, `{"type":7}`},
	{websocket.TextMessage, `{"type":"explode"}`},
	{websocket.TextMessage, `{"type":"message","room":"lobby","data":null}`},
	{websocket.TextMessage, `{"type":"message","room":"nowhere","data":1}`},
	{websocket.TextMessage, `{"type":"join","room":"lobby","id":"` + strings.Repeat("i", 65) + `"}`},
	{websocket.TextMessage, `{"type":"join","room":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}`},
	{websocket.TextMessage, `{"type":"leave","room":"never-joined"}`},
	{websocket.BinaryMessage, "\x00\x01\x02\xff"},
	{websocket.TextMessage, `{"type":"join","room":"lobby"` /* truncated */},
}

// TestHostileInput throws hostile input at two clustered node processes:
// room names made of subject and key syntax (which must still reach
// exactly their own members on both nodes), invalid room names,
// malformed frames, an oversized frame, and many distinct client IDs at a
// bounded rate. Neither node panics or stops answering, their heap stays
// within hostileHeap of its level before, and their descriptors return to
// their baseline.
func TestHostileInput(t *testing.T) {
	checkGoroutines(t)
	ns := startNATS(t)
	urls := []string{ns.ClientURL()}
	args := []string{"--consistency", "global", "--limits-max-message-size", "4096", "--limits-connections-per-minute", "0",
		"--limits-messages-per-minute", "100000", "--limits-bytes-per-minute", "0"}
	a := startNode(t, "hostile-a", urls, args...)
	b := startNode(t, "hostile-b", urls, args...)
	for _, n := range []*nodeProc{a, b} {
		waitFor(t, 10*time.Second, n.id+" to see two live nodes", func() bool { return n.metrics()["ratethrottle_live_nodes"] == 2 })
		n.checkFDs()
	}
	heapBefore := []float64{a.metrics()["go_memstats_heap_inuse_bytes"], b.metrics()["go_memstats_heap_inuse_bytes"]}

	t.Run("room names", func(t *testing.T) {
		// Rooms in groups of 8, under the default MaxRoomsPerConn of 16.
		var ca *wsClient
		for g := 0; g < len(hostileRooms); g += 8 {
			rooms := hostileRooms[g:min(g+8, len(hostileRooms))]
			var err error
			if ca, err = dialClient(t, a.Addr(), fmt.Sprint("192.0.2.1", g), nil); err != nil {
				t.Fatal(err)
			}
			cb, err := dialClient(t, b.Addr(), fmt.Sprint("192.0.2.2", g), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, room := range rooms {
				if err := ca.join(room); err != nil {
					t.Fatalf("join %q on a: %v", room, err)
				}
				if err := cb.join(room); err != nil {
					t.Fatalf("join %q on b: %v", room, err)
				}
			}
			// Each room's message reaches the other node's member in
			// that room only, once.
			for i, room := range rooms {
				id := fmt.Sprint("m", g+i)
				if err := ca.send(map[string]any{"type": "message", "room": room, "data": payload{ID: id}}); err != nil {
					t.Fatal(err)
				}
				f, err := cb.next(5*time.Second, func(f frame) bool { return f.Type == "message" || f.Type == "error" })
				if err != nil {
					t.Fatalf("room %q: %v", room, err)
				}
				if f.Type != "message" || f.Room != room || messageID(f) != id {
					t.Fatalf("room %q: b got %+v, want message %s in that room", room, f, id)
				}
			}
			if f, err := cb.next(300*time.Millisecond, func(f frame) bool { return f.Type == "message" }); err == nil {
				t.Errorf("b got an extra message %+v", f)
			}
		}
		for _, room := range invalidRooms {
			if err := ca.join(room); err == nil || !strings.Contains(err.Error(), "invalid_room") {
				t.Errorf("join %q: %v, want invalid_room", room, err)
			}
		}
	})

	t.Run("malformed frames", func(t *testing.T) {
		c, err := dialClient(t, a.Addr(), "192.0.2.3", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.join("lobby"); err != nil {
			t.Fatal(err)
		}
		for _, mf := range malformedFrames {
			if err := c.write(mf.typ, []byte(mf.data)); err != nil {
				t.Fatalf("%.40q: %v (connection: %v)", mf.data, err, c.closeErr(time.Second))
			}
			f, err := c.next(5*time.Second, func(f frame) bool { return f.Type == "error" || f.Type == "joined" })
			if err != nil || f.Type != "error" {
				t.Fatalf("%.40q: got %+v, %v; want an error frame", mf.data, f, err)
			}
		}
		// Still usable.
		if err := c.join("after-garbage"); err != nil {
			t.Fatalf("connection unusable after malformed frames: %v", err)
		}
		// A frame over MaxMessageSize is refused from its header: the
		// node closes with 1009 without reading the payload. The client
		// sees the close frame, or, when the kernel resets the
		// connection over the unread payload first, a reset; either way
		// the node counts a message_size violation.
		sizeViolations := func() float64 { return a.metrics()[`ratethrottle_violations_total{type="message_size"}`] }
		before := sizeViolations()
		_ = c.write(websocket.TextMessage, []byte(strings.Repeat("x", 4097)))
		err = c.closeErr(5 * time.Second)
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.CloseMessageTooBig {
			t.Fatalf("oversized frame: %v, want close 1009", err)
		}
		if err == nil || err.Error() == "connection still open" {
			t.Fatalf("oversized frame: connection still open (%v)", err)
		}
		waitFor(t, 5*time.Second, "a message_size violation", func() bool { return sizeViolations() > before })
		t.Logf("oversized frame: %v", err)
	})

	t.Run("many client IDs", func(t *testing.T) {
		n := pick(400, 5000)
		var wg sync.WaitGroup
		var failed atomic.Int64
		next := atomic.Int64{}
		for w := range 4 { // four clients at a time
			node := []*nodeProc{a, b}[w%2]
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(n) {
						return
					}
					// One /64 each: the handler counts a /64 as one client.
					c, err := dialClient(t, node.Addr(), fmt.Sprintf("2001:db8:%x::1", i), nil)
					if err != nil {
						failed.Add(1)
						continue
					}
					if c.join(fmt.Sprintf("room.%d.*", i%50)) != nil {
						failed.Add(1)
					}
					c.close()
				}
			})
		}
		wg.Wait()
		if failed.Load() != 0 {
			t.Errorf("%d of %d distinct clients failed to connect and join", failed.Load(), n)
		}
		for _, n := range []*nodeProc{a, b} {
			waitFor(t, 10*time.Second, n.id+" to hold no connections", func() bool {
				m := n.metrics()
				return m["ratethrottle_connections"] == 0 && m["ratethrottle_clients"] == 0
			})
		}
	})

	for i, n := range []*nodeProc{a, b} {
		if code, _ := httpGet("http://" + n.Addr() + "/healthz"); code != 200 {
			t.Errorf("%s /healthz: %d", n.id, code)
		}
		after := n.metrics()["go_memstats_heap_inuse_bytes"]
		t.Logf("%s heap in use: %.1f MB before, %.1f MB after (bound +%d MB)", n.id, heapBefore[i]/1e6, after/1e6, hostileHeap>>20)
		if after-heapBefore[i] > hostileHeap {
			t.Errorf("%s heap grew %.1f MB", n.id, (after-heapBefore[i])/1e6)
		}
	}
}

// hostileHeap bounds a node's heap growth over TestHostileInput (its
// limits buckets for a few thousand clients, room state, buffers the
// runtime has not yet returned).
const hostileHeap = 16 << 20
