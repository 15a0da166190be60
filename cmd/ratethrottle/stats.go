package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

const statsUsage = `stats [--node ID]… [--wait 1s] [--expect N] [--json] [flags]

Asks every node for its statistics over NATS (the subject
<events-prefix>.node.stats, which the nodes' /stats?scope=cluster uses too)
and prints one row per node and a total. It waits --wait for the answers,
or until --expect nodes have answered. Exits 4 when no node (or no node
named by --node) answers.`

// nodeReply is one node's answer, decoded generically so that fields a
// newer node adds are kept and summed.
type nodeReply map[string]any

func (r nodeReply) str(k string) string {
	s, _ := r[k].(string)
	return s
}

func (r nodeReply) num(k string) float64 {
	f, _ := r[k].(float64)
	return f
}

func (r nodeReply) flag(k string) bool {
	b, _ := r[k].(bool)
	return b
}

// sumMap adds the values of the object k.
func (r nodeReply) sumMap(k string) float64 {
	m, _ := r[k].(map[string]any)
	var s float64
	for _, v := range m {
		f, _ := v.(float64)
		s += f
	}
	return s
}

// clusterReply is the JSON of stats --json: the shape of the node's
// /stats?scope=cluster.
type clusterReply struct {
	Time  time.Time   `json:"time"`
	Nodes []nodeReply `json:"nodes"`
	Total nodeReply   `json:"total"`
}

// askStats publishes one statistics request and collects the answers of
// the nodes keep accepts (nil: every node) for wait, or until expect of
// them have answered.
func askStats(ctx context.Context, nc *nats.Conn, prefix string, wait time.Duration, expect int, keep func(nodeReply) bool) ([]nodeReply, error) {
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, classify("subscribe", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(prefix+".node.stats", inbox, nil); err != nil {
		return nil, classify("stats request", err)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	seen := map[string]bool{}
	var out []nodeReply
collect:
	for expect <= 0 || len(out) < expect {
		select {
		case m := <-ch:
			var r nodeReply
			if json.Unmarshal(m.Data, &r) != nil || r.str("node") == "" || seen[r.str("node")] || (keep != nil && !keep(r)) {
				continue
			}
			seen[r.str("node")] = true
			out = append(out, r)
		case <-timer.C:
			break collect
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	slices.SortFunc(out, func(a, b nodeReply) int {
		if a.str("node") < b.str("node") {
			return -1
		}
		if a.str("node") > b.str("node") {
			return 1
		}
		return 0
	})
	return out, nil
}

// total sums the nodes' answers: numbers add up except the gauges that
// take the largest value, objects of numbers add up per key, ready is
// true when every node is, store_down when any is.
func total(nodes []nodeReply) nodeReply {
	t := nodeReply{"node": "*", "ready": len(nodes) > 0}
	largest := map[string]bool{"sync_lag_ms": true, "live_nodes": true, "bans": true, "uptime_seconds": true}
	for _, n := range nodes {
		for k, v := range n {
			switch v := v.(type) {
			case float64:
				cur, _ := t[k].(float64)
				if largest[k] {
					t[k] = max(cur, v)
				} else {
					t[k] = cur + v
				}
			case bool:
				cur, _ := t[k].(bool)
				if k == "ready" {
					t[k] = cur && v
				} else {
					t[k] = cur || v
				}
			case map[string]any:
				m, _ := t[k].(map[string]any)
				if m == nil {
					m = map[string]any{}
					t[k] = m
				}
				for mk, mv := range v {
					if f, ok := mv.(float64); ok {
						cur, _ := m[mk].(float64)
						m[mk] = cur + f
					} else if _, set := m[mk]; !set {
						m[mk] = mv
					}
				}
			}
		}
	}
	return t
}

func runStats(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "stats", statsUsage)
	var c connFlags
	c.register(fs, e)
	var nodes multi
	fs.Var(&nodes, "node", "only this node (repeatable)")
	wait := fs.Duration("wait", time.Second, "how long to collect answers")
	expect := fs.Int("expect", 0, "stop waiting once this many nodes have answered (0: wait the full --wait)")
	asJSON := fs.Bool("json", false, "print JSON: {time, nodes, total}")
	pos, err := parse(fs, e, args)
	if err != nil {
		return err
	}
	if err := wantArgs("stats", pos); err != nil {
		return err
	}
	if *wait <= 0 {
		return usageErr("stats: --wait %v: must be positive", *wait)
	}
	if *expect < 0 {
		return usageErr("stats: --expect %d: must not be negative", *expect)
	}
	nc, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	if len(nodes) > 0 && *expect == 0 {
		*expect = len(nodes)
	}
	start := time.Now()
	var keep func(nodeReply) bool
	if len(nodes) > 0 {
		keep = func(r nodeReply) bool { return slices.Contains(nodes, r.str("node")) }
	}
	replies, err := askStats(ctx, nc, c.prefix, *wait, *expect, keep)
	if err != nil {
		return err
	}
	if len(replies) == 0 {
		if len(nodes) > 0 {
			return notFound("stats: no answer from node %s within %v", nodes.String(), *wait)
		}
		return notFound("stats: no node answered within %v on %s.node.stats", *wait, c.prefix)
	}
	out := clusterReply{Time: start.UTC(), Nodes: replies, Total: total(replies)}
	if *asJSON {
		return printJSON(e, out)
	}
	fmt.Fprint(e.stdout, statsTable(out))
	return nil
}

func statsTable(c clusterReply) string {
	var t table
	t.add("NODE", "READY", "UP", "CONNS", "CLIENTS", "ROOMS", "MESSAGES", "DENIED", "VIOLATIONS", "SYNC LAG", "KV WRITES", "BANS", "STORE")
	row := func(r nodeReply) {
		store := "ok"
		if r.flag("store_down") {
			store = "DOWN"
		}
		up := "-"
		if r.str("node") != "*" {
			up = human(time.Duration(r.num("uptime_seconds") * float64(time.Second)))
		}
		t.add(clean(r.str("node")), strconv.FormatBool(r.flag("ready")), up,
			num(r.num("active_connections")), num(r.num("unique_clients")), num(r.num("rooms")),
			num(r.num("total_messages")), num(r.sumMap("denied")), num(r.sumMap("violations")),
			fmt.Sprintf("%.1fms", r.num("sync_lag_ms")), num(r.num("kv_writes")), num(r.num("bans")), store)
	}
	for _, r := range c.Nodes {
		row(r)
	}
	row(c.Total)
	s := t.String()
	if den, ok := c.Total["denied"].(map[string]any); ok && len(den) > 0 {
		keys := make([]string, 0, len(den))
		for k := range den {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		s += "denied by reason:"
		for _, k := range keys {
			f, _ := den[k].(float64)
			s += fmt.Sprintf(" %s=%s", clean(k), num(f))
		}
		s += "\n"
	}
	return s
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
