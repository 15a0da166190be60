"use strict";
// The dashboard: one frame a second from /dashboard/ws with this node's and
// the cluster's statistics, the latest violation events and every node's
// per-second samples; the first frame also carries the last ten minutes of
// samples, so the charts start with history.
(function () {
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => Number(n || 0).toLocaleString();
  function row(cells, cls) {
    const tr = document.createElement("tr");
    if (cls) tr.className = cls;
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    return tr;
  }
  function fill(id, rows) { const t = $(id); t.replaceChildren(...rows); }
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);

  // Samples by node: node ID → Map(second → sample), at most WINDOW s.
  const WINDOW = 600;
  const hist = new Map();
  let newest = 0;
  function addSamples(byNode) {
    for (const [node, samples] of Object.entries(byNode || {})) {
      let m = hist.get(node);
      if (!m) { m = new Map(); hist.set(node, m); }
      for (const s of samples) { m.set(s.t, s); newest = Math.max(newest, s.t); }
    }
    for (const [node, m] of hist) {
      for (const t of m.keys()) if (t <= newest - WINDOW) m.delete(t);
      if (m.size === 0) hist.delete(node);
    }
  }

  // Series builders. A series is {name, pts: [[t, v], ...]} sorted by t.
  const nodeIDs = () => [...hist.keys()].sort();
  function perNode(value) {
    return nodeIDs().map((node) => ({
      name: node,
      pts: [...hist.get(node).values()].sort((a, b) => a.t - b.t).map((s) => [s.t, value(s)]),
    }));
  }
  // summed adds value(sample) over the nodes for every second any node has.
  function summed(names, value) {
    const bySecond = new Map();
    for (const m of hist.values()) {
      for (const s of m.values()) {
        let acc = bySecond.get(s.t);
        if (!acc) { acc = names.map(() => 0); bySecond.set(s.t, acc); }
        names.forEach((n, i) => { acc[i] += value(s, n); });
      }
    }
    const ts = [...bySecond.keys()].sort((a, b) => a - b);
    return names.map((n, i) => ({ name: n, pts: ts.map((t) => [t, bySecond.get(t)[i]]) }));
  }

  // Drawing, in SVG elements with presentation attributes only (the page's
  // content security policy allows no inline style).
  const SVG = "http://www.w3.org/2000/svg";
  const VW = 420, VH = 170, L = 44, R = 8, T = 8, B = 40;
  const COLORS = ["#2f6fed", "#c0392b", "#1f8a4c", "#8a5cf6", "#d68910", "#16a0a0", "#e84393", "#34495e", "#7f8c8d", "#a0522d"];
  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // niceMax returns 1, 2 or 5 times a power of ten, at least v.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const k of [1, 2, 5, 10]) if (k * p >= v) return k * p;
    return 10 * p;
  }
  const label = (v) => (v >= 1000 ? (v / 1000).toLocaleString() + "k" : v < 1 && v > 0 ? v.toFixed(2) : v.toLocaleString());

  // span is the seconds the charts show: the history held, at least
  // MIN_SPAN and at most WINDOW.
  const MIN_SPAN = 30;
  function span() {
    let oldest = newest;
    for (const m of hist.values()) for (const t of m.keys()) oldest = Math.min(oldest, t);
    return Math.min(WINDOW, Math.max(MIN_SPAN, newest - oldest));
  }
  const ago = (s) => (s >= 120 ? "-" + Math.round(s / 60) + " min" : "-" + Math.round(s) + " s");

  function drawChart(id, series, colors, width) {
    const svg = $(id).querySelector("svg");
    const end = newest, start = newest - width;
    const w = VW - L - R, h = VH - T - B;
    const x = (t) => L + ((t - start) / width) * w;
    let top = 0;
    for (const s of series) for (const [, v] of s.pts) top = Math.max(top, v);
    top = niceMax(top);
    const y = (v) => T + h - (v / top) * h;
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      const yy = y(top * f).toFixed(1);
      parts.push(el("line", { x1: L, x2: L + w, y1: yy, y2: yy, stroke: f === 0 ? "#b8bfcc" : "#e5e9f0", "stroke-width": 1 }));
      parts.push(el("text", { x: L - 4, y: Number(yy) + 3, "text-anchor": "end", fill: "#6b7385", class: "axis" }, label(top * f)));
    }
    for (const [t, txt] of [[start, ago(width)], [start + width / 2, ago(width / 2)], [end, "now"]]) {
      parts.push(el("text", { x: x(t).toFixed(1), y: T + h + 13, "text-anchor": t === start ? "start" : t === end ? "end" : "middle", fill: "#6b7385", class: "axis" }, txt));
    }
    let points = 0, lx = L;
    series.forEach((s, i) => {
      const color = colors ? colors[i] : COLORS[i % COLORS.length];
      const pts = s.pts.filter(([t]) => t > start);
      points += pts.length;
      if (pts.length > 0) {
        parts.push(el("polyline", {
          points: pts.map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" "),
          fill: "none", stroke: color, "stroke-width": 1.5, "stroke-linejoin": "round", "data-series": s.name, "data-points": pts.length,
        }));
      }
      parts.push(el("rect", { x: lx, y: VH - 14, width: 10, height: 10, rx: 2, fill: color }));
      parts.push(el("text", { x: lx + 14, y: VH - 5, fill: "#1d2433", class: "legend" }, s.name));
      lx += 14 + 6.5 * s.name.length + 12;
    });
    if (series.length === 0) parts.push(el("text", { x: L + 4, y: VH - 5, fill: "#6b7385", class: "legend" }, "none yet"));
    svg.replaceChildren(...parts);
    svg.dataset.points = points;
    svg.dataset.newest = newest;
    if (svg.dataset.firstPoints === undefined) svg.dataset.firstPoints = points;
  }

  function drawCharts() {
    const width = span();
    drawChart("chart-decisions", summed(["allowed", "denied"], (s, n) => s[n] || 0), ["#1f8a4c", "#c0392b"], width);
    const types = new Set();
    for (const m of hist.values()) for (const s of m.values()) for (const k of Object.keys(s.violations || {})) types.add(k);
    drawChart("chart-violations", summed([...types].sort(), (s, n) => (s.violations || {})[n] || 0), null, width);
    drawChart("chart-connections", perNode((s) => s.connections), null, width);
    drawChart("chart-lag", perNode((s) => s.sync_lag_ms), null, width);
    drawChart("chart-kv", perNode((s) => s.kv_writes), null, width);
  }

  function render(f) {
    const c = f.cluster || { nodes: [f.node], total: f.node, missing: [] };
    const t = c.total;
    const missing = c.missing || [];
    const cards = [
      ["Nodes", (c.nodes || []).length + (missing.length ? " (" + missing.length + " missing)" : "")], ["Connections", t.active_connections], ["Clients", t.unique_clients],
      ["Rooms", t.rooms], ["Messages", t.total_messages], ["Violations", sum(t.violations)],
      ["Rejected connections", t.rejected_connections], ["Bans", t.bans], ["Events published", t.events_published],
    ];
    fill("totals", cards.map(([k, v]) => {
      const d = document.createElement("div"); d.className = "stat";
      const vv = document.createElement("div"); vv.className = "v"; vv.textContent = typeof v === "string" ? v : fmt(v);
      const kk = document.createElement("div"); kk.className = "k"; kk.textContent = k;
      d.append(vv, kk); return d;
    }));
    fill("nodes", (c.nodes || []).slice().sort((a, b) => a.node.localeCompare(b.node)).map((n) => row([
      n.node + (n.node === f.node.node ? " (this)" : ""), n.ready ? "yes" : "no", fmt(n.active_connections), fmt(n.unique_clients),
      fmt(n.rooms), fmt(n.total_messages), fmt(sum(n.violations)), (n.sync_lag_ms || 0).toFixed(1) + " ms", fmt(n.kv_writes),
      fmt(n.events_published) + (n.events_dropped ? " (" + fmt(n.events_dropped) + " dropped)" : ""),
    ])).concat(missing.map((id) => row([id, "missing: no answer", "", "", "", "", "", "", "", ""], "missing"))));
    const byType = Object.entries(t.violations || {}).sort((a, b) => b[1] - a[1]);
    fill("denied", byType.length ? byType.map(([r, v]) => row([r, fmt(v)])) : [row(["none yet", ""])]);
    $("seen").textContent = "(" + fmt(f.violations_seen) + " seen by this node)";
    const vs = f.violations || [];
    fill("violations", vs.length ? vs.map((e) => row([
      new Date(e.time).toLocaleTimeString(), e.node, e.type, e.client, e.room || "", e.limit || "",
      e.retry_after_ms > 0 ? (e.retry_after_ms / 1000).toFixed(1) + " s" : "",
    ])) : [row(["none yet", "", "", "", "", "", ""])]);
    addSamples(f.history);
    addSamples(f.samples);
    drawCharts();
    $("charts-note").textContent = newest ? "(per-second samples; showing " + ago(span()).slice(1) + ")" : "";
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/dashboard/ws");
    ws.onopen = () => { $("live").textContent = "live"; };
    ws.onmessage = (ev) => {
      try {
        render(JSON.parse(ev.data));
        $("live").textContent = "live · " + new Date().toLocaleTimeString();
      } catch (e) {
        $("live").textContent = "bad frame: " + e;
      }
    };
    ws.onclose = () => { $("live").textContent = "disconnected, retrying…"; setTimeout(connect, 2000); };
  }
  connect();
})();
