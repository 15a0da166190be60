package cluster

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

const (
	// rollingCold is docs/ACCURACY.md's Global cold-burst bound on
	// admitted/ideal: every restart is a cold start of one node's view.
	rollingCold = 1.10
	// deliveryWindow is how long before and after a message's echo to its
	// sender a member must have been connected for the message to count
	// as owed to it. Outside it a miss is a counted drop (the member's
	// node was restarting), not a loss.
	deliveryWindow = 250 * time.Millisecond
	// The flooding client's limit: 20 messages a second, burst 40.
	floodPerMinute = 1200
	floodBurst     = 40
)

// chatLog records a rolling restart's traffic.
type chatLog struct {
	mu        sync.Mutex
	echoed    map[string]time.Time // steady message id → its echo at the sender
	received  []map[string]bool    // member → message ids received
	intervals [][]([2]time.Time)   // member → connected intervals (end zero: still connected)
	after     []map[int]int        // member → restart number → messages received after it
	restarts  atomic.Int32         // restarts done
}

func (l *chatLog) connectedAround(member int, at time.Time) bool {
	for _, iv := range l.intervals[member] {
		if !iv[0].After(at.Add(-deliveryWindow)) && (iv[1].IsZero() || iv[1].After(at.Add(deliveryWindow))) {
			return true
		}
	}
	return false
}

// TestRollingRestart restarts three node processes one after the other
// (SIGTERM, start again under the same ID and address) under steady chat
// load: one member and one sender per node in one room, and a client
// flooding every node at about 10x its per-client message limit. Members
// keep receiving after every restart; every message echoed to its sender
// reaches every member connected around it; the flooding client stays
// within the steady-state bound of the ideal bucket plus one cold
// allowance per restart; each node's descriptors return to their
// baseline.
func TestRollingRestart(t *testing.T) {
	checkGoroutines(t)
	ns := startNATS(t)
	urls := []string{ns.ClientURL()}
	args := []string{"--consistency", "global", "--limits-message-scope", "client",
		"--limits-messages-per-minute", fmt.Sprint(floodPerMinute), "--limits-message-burst", fmt.Sprint(floodBurst),
		"--limits-bytes-per-minute", "0", "--limits-connections-per-minute", "0", "--limits-max-concurrent-connections", "0"}
	nodes := make([]*nodeProc, 3)
	for i := range nodes {
		nodes[i] = startNode(t, fmt.Sprintf("roll%d", i), urls, args...)
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.id+" to see three live nodes", func() bool { return n.metrics()["ratethrottle_live_nodes"] == 3 })
		n.checkFDs()
	}

	log := &chatLog{echoed: map[string]time.Time{}}
	for range nodes {
		log.received = append(log.received, map[string]bool{})
		log.intervals = append(log.intervals, nil)
		log.after = append(log.after, map[int]int{})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// Members: one per node, distinct clients.
	for i, n := range nodes {
		wg.Go(func() {
			(&session{t: t, node: n, client: fmt.Sprintf("10.0.1.%d", i), room: "town",
				onFrame: func(f frame) {
					if id := messageID(f); id != "" && f.Room == "town" {
						log.mu.Lock()
						log.received[i][id] = true
						log.after[i][int(log.restarts.Load())]++
						log.mu.Unlock()
					}
				},
				up: func(_ *wsClient, at time.Time) {
					log.mu.Lock()
					log.intervals[i] = append(log.intervals[i], [2]time.Time{at, {}})
					log.mu.Unlock()
				},
				down: func(at time.Time) {
					log.mu.Lock()
					log.intervals[i][len(log.intervals[i])-1][1] = at
					log.mu.Unlock()
				},
			}).run(stop)
		})
	}
	// Senders: one per node, 10 messages a second each, half their limit.
	var seq atomic.Int64
	for i, n := range nodes {
		sender := fmt.Sprintf("10.0.2.%d", i)
		wg.Go(func() {
			(&session{t: t, node: n, client: sender, room: "town",
				onFrame: func(f frame) {
					if id := messageID(f); id != "" && len(id) > len(sender) && id[:len(sender)] == sender {
						log.mu.Lock()
						log.echoed[id] = time.Now()
						log.mu.Unlock()
					}
				},
				work: func(c *wsClient, stop <-chan struct{}) {
					sendEvery(c, stop, 100*time.Millisecond, func() (map[string]any, func()) {
						id := fmt.Sprintf("%s-%d", sender, seq.Add(1))
						return map[string]any{"type": "message", "room": "town", "data": payload{ID: id}}, nil
					})
				},
			}).run(stop)
		})
	}
	// The flooder: one connection per node, 67 messages a second each.
	var sent, denied atomic.Int64
	var floodMu sync.Mutex
	admittedIDs := map[string]bool{}
	var arrivals []time.Time // when each flood message was sent, for the ideal
	const flooder = "203.0.113.99"
	for _, n := range nodes {
		wg.Go(func() {
			(&session{t: t, node: n, client: flooder, room: "flood",
				onFrame: func(f frame) {
					switch {
					case f.Type == "error" && f.Error == "rate_limit_exceeded":
						denied.Add(1)
					case messageID(f) != "":
						floodMu.Lock()
						admittedIDs[messageID(f)] = true
						floodMu.Unlock()
					}
				},
				work: func(c *wsClient, stop <-chan struct{}) {
					sendEvery(c, stop, 15*time.Millisecond, func() (map[string]any, func()) {
						id := fmt.Sprintf("flood-%d", seq.Add(1))
						return map[string]any{"type": "message", "room": "flood", "id": id, "data": payload{ID: id}}, func() {
							sent.Add(1)
							floodMu.Lock()
							arrivals = append(arrivals, time.Now())
							floodMu.Unlock()
						}
					})
				},
			}).run(stop)
		})
	}

	start := time.Now()
	pause := pick(time.Second, 5*time.Second)
	rounds := pick(1, 3)
	time.Sleep(pause) // steady load before the first restart; the restarts below are what the scenario waits on
	for range rounds {
		for _, n := range nodes {
			n.term()
			n.restart()
			waitFor(t, 15*time.Second, n.id+" to see three live nodes again", func() bool { return n.metrics()["ratethrottle_live_nodes"] == 3 })
			log.restarts.Add(1)
			time.Sleep(pause) // load between restarts
		}
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	elapsed := time.Since(start)

	// Limit across the restarts. The ideal is one exact bucket fed the
	// flood's arrivals: the flooder's connections are closed after too
	// many denials and reconnect, so it does not offer load all the time.
	// Every restart is a cold start of the node's view of the bucket,
	// which it takes from the lowest level the other nodes (and its own
	// previous run) last wrote, so the bound is docs/ACCURACY.md's cold
	// burst tolerance, 1.10 x ideal.
	restarts := 3 * rounds
	spec := limiter.Spec{Limit: floodPerMinute, Per: time.Minute, Burst: floodBurst}
	var exact limiter.Bucket
	idealN := 0
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	for _, at := range arrivals {
		if exact.TakeAt(spec, at, 1).OK {
			idealN++
		}
	}
	ideal := float64(idealN)
	bound := rollingCold * ideal
	admitted := float64(len(admittedIDs))
	t.Logf("flooder: sent %d over %v, denied %d, admitted (echoed) %.0f; ideal %.0f: admitted/ideal %.3f; bound %.0f (%.2f x ideal, %d restarts)",
		sent.Load(), elapsed.Round(time.Millisecond), denied.Load(), admitted, ideal, admitted/ideal, bound, rollingCold, restarts)
	if admitted > bound {
		t.Errorf("flooder: %.0f messages admitted, bound %.0f", admitted, bound)
	}
	if admitted < 0.9*ideal {
		t.Errorf("flooder: %.0f messages admitted, under 0.9 x ideal %.0f", admitted, ideal)
	}

	// Delivery: every echoed message reached every member connected
	// around it; members received after every restart.
	log.mu.Lock()
	defer log.mu.Unlock()
	owed, lost, excused := 0, 0, 0
	for id, at := range log.echoed {
		for m := range nodes {
			if !log.connectedAround(m, at) {
				excused++
				continue
			}
			owed++
			if !log.received[m][id] {
				lost++
			}
		}
	}
	t.Logf("steady chat: %d messages echoed; %d deliveries owed to connected members, %d lost, %d excused (member's node restarting)",
		len(log.echoed), owed, lost, excused)
	if lost > 0 {
		t.Errorf("%d of %d owed deliveries lost", lost, owed)
	}
	for m := range nodes {
		for r := 1; r <= 3*rounds; r++ {
			if log.after[m][r] == 0 {
				t.Errorf("member %d received nothing after restart %d", m, r)
			}
		}
	}
}

// sendEvery sends the frame next returns every interval until stop is
// closed, the connection ends or a send fails; after each successful send
// it calls the sent callback next returned with the frame, if any.
func sendEvery(c *wsClient, stop <-chan struct{}, every time.Duration, next func() (frame map[string]any, sent func())) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.done:
			return
		case <-tick.C:
		}
		f, sent := next()
		if c.send(f) != nil {
			return
		}
		if sent != nil {
			sent()
		}
	}
}
