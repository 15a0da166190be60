"use strict";
// The dashboard: one frame a second from /dashboard/ws with this node's and
// the cluster's statistics and the latest violation events.
(function () {
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => Number(n || 0).toLocaleString();
  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    return tr;
  }
  function fill(id, rows) { const t = $(id); t.replaceChildren(...rows); }
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);

  function render(f) {
    const c = f.cluster || { nodes: [f.node], total: f.node };
    const t = c.total;
    const cards = [
      ["Nodes", (c.nodes || []).length], ["Connections", t.active_connections], ["Clients", t.unique_clients],
      ["Rooms", t.rooms], ["Messages", t.total_messages], ["Violations", sum(t.violations)],
      ["Rejected connections", t.rejected_connections], ["Bans", t.bans], ["Events published", t.events_published],
    ];
    fill("totals", cards.map(([k, v]) => {
      const d = document.createElement("div"); d.className = "stat";
      const vv = document.createElement("div"); vv.className = "v"; vv.textContent = fmt(v);
      const kk = document.createElement("div"); kk.className = "k"; kk.textContent = k;
      d.append(vv, kk); return d;
    }));
    fill("nodes", (c.nodes || []).slice().sort((a, b) => a.node.localeCompare(b.node)).map((n) => row([
      n.node + (n.node === f.node.node ? " (this)" : ""), n.ready ? "yes" : "no", fmt(n.active_connections), fmt(n.unique_clients),
      fmt(n.rooms), fmt(n.total_messages), fmt(sum(n.violations)), (n.sync_lag_ms || 0).toFixed(1) + " ms", fmt(n.kv_writes),
      fmt(n.events_published) + (n.events_dropped ? " (" + fmt(n.events_dropped) + " dropped)" : ""),
    ])));
    const byType = Object.entries(t.violations || {}).sort((a, b) => b[1] - a[1]);
    fill("denied", byType.length ? byType.map(([r, v]) => row([r, fmt(v)])) : [row(["none yet", ""])]);
    $("seen").textContent = "(" + fmt(f.violations_seen) + " seen by this node)";
    const vs = f.violations || [];
    fill("violations", vs.length ? vs.map((e) => row([
      new Date(e.time).toLocaleTimeString(), e.node, e.type, e.client, e.room || "", e.limit || "",
      e.retry_after_ms > 0 ? (e.retry_after_ms / 1000).toFixed(1) + " s" : "",
    ])) : [row(["none yet", "", "", "", "", "", ""])]);
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/dashboard/ws");
    ws.onopen = () => { $("live").textContent = "live"; };
    ws.onmessage = (ev) => { try { render(JSON.parse(ev.data)); $("live").textContent = "live · " + new Date().toLocaleTimeString(); } catch (e) {} };
    ws.onclose = () => { $("live").textContent = "disconnected, retrying…"; setTimeout(connect, 2000); };
  }
  connect();
})();
