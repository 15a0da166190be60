"use strict";
// The chat page: joins one room over /ws with the JSON room protocol
// (docs/PROTOCOL.md) and shows the limiter's answers as notices.
(function () {
  const $ = (id) => document.getElementById(id);
  const explain = {
    rate_limit_exceeded: "You are sending messages too fast.",
    bandwidth_exceeded: "You are sending too many bytes.",
    room_rate_exceeded: "This room is receiving too many messages.",
    message_too_large: "That message is too large.",
    room_full: "This room is full.",
    connection_rate_exceeded: "Too many new connections from your address.",
    too_many_connections: "Too many open connections from your address; close another tab.",
    banned: "You are banned.",
    too_many_denials: "Closed after repeated rate-limit violations.",
    store_unavailable: "The cluster store is unavailable.",
    name_taken: "That name is already taken in this room; choose another and press Join.",
  };
  // own is this connection's ID as the server reported it in "joined": a
  // message is "mine" when the server says it came from this connection.
  // token is the demo sign-in's JWT, sent as ?token= on /ws; "" is anonymous.
  let token = "";
  let ws = null, room = "", name = "", own = "", opened = false, joined = false, timer = null, seq = 0, lastRetryMs = 0;

  function setStatus(state, text) { const s = $("status"); s.dataset.state = state; s.textContent = text; }

  function notice(kind, text, reason) {
    const n = $("notice");
    clearInterval(timer);
    n.className = "notice " + kind;
    n.dataset.reason = reason || "";
    n.textContent = text;
    n.hidden = false;
  }

  function rateNotice(code, retryMs) {
    const base = (explain[code] || code) + " ";
    const until = Date.now() + retryMs;
    const tick = () => {
      const left = Math.max(0, until - Date.now());
      $("notice").textContent = left > 0
        ? base + "Rate-limited (" + code + "): wait " + (left / 1000).toFixed(1) + " s."
        : base + "You can send again.";
      if (left <= 0) clearInterval(timer);
    };
    notice("ratelimit", "", code);
    $("notice").dataset.retryMs = String(retryMs);
    tick();
    timer = setInterval(tick, 100);
  }

  function addLine(who, text, cls) {
    const li = document.createElement("li");
    if (cls) li.className = cls;
    const t = document.createElement("span");
    t.className = "time";
    t.textContent = new Date().toLocaleTimeString();
    li.appendChild(t);
    if (who) { const w = document.createElement("span"); w.className = "who"; w.textContent = who; li.appendChild(w); }
    li.appendChild(document.createTextNode(text));
    const list = $("messages");
    list.appendChild(li);
    while (list.children.length > 500) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
  }

  function connect() {
    name = $("name").value.trim();
    room = $("room").value.trim();
    if (!name || !room) return;
    if (ws) ws.close(1000);
    opened = false;
    joined = false;
    own = "";
    $("chat").dataset.connection = "";
    lastRetryMs = 0;
    $("notice").hidden = true;
    setStatus("connecting", "Connecting…");
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(proto + location.host + "/ws" + (token ? "?token=" + encodeURIComponent(token) : ""));
    const me = ws;
    ws.onopen = () => {
      if (me !== ws) return;
      opened = true;
      // The name is sent once, at join; the server attaches it, with the
      // connection's ID, to every message this connection sends.
      me.send(JSON.stringify({ type: "join", room: room, name: name, id: "join-" + (++seq) }));
    };
    ws.onmessage = (ev) => {
      if (me !== ws) return;
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      switch (f.type) {
        case "joined":
          joined = true;
          own = typeof f.connection === "string" ? f.connection : "";
          $("chat").dataset.connection = own;
          setStatus("open", "Connected as " + (typeof f.name === "string" && f.name ? f.name : name));
          $("chat").hidden = false;
          $("room-title").textContent = "Room: " + f.room;
          addLine("", "You joined " + f.room + ".", "system");
          $("text").focus();
          break;
        case "message": {
          // The sender's name and connection come from the server, never
          // from the message's data.
          const d = f.data || {};
          const who = typeof f.name === "string" && f.name ? f.name : String(f.from || "");
          addLine(who, String(d.text ?? JSON.stringify(d)), own && f.from === own ? "mine" : "");
          break;
        }
        case "error":
          if (f.error === "name_taken") {
            notice("closed", explain.name_taken, f.error);
            $("name").focus();
            break;
          }
          lastRetryMs = f.retry_after_ms || 0;
          if (f.retry_after_ms !== undefined) rateNotice(f.error, f.retry_after_ms);
          else notice("closed", (explain[f.error] || "Refused: ") + " (" + f.error + ")", f.error);
          break;
      }
    };
    ws.onclose = (ev) => {
      if (me !== ws) return;
      ws = null;
      setStatus("closed", "Disconnected");
      const reason = ev.reason || "";
      let text;
      if (ev.code === 1008 && !joined) {
        // A refused connection gets an error frame with the wait first.
        text = "Connection refused: " + (explain[reason] || reason) +
          (lastRetryMs > 0 ? " Try again in " + Math.ceil(lastRetryMs / 1000) + " s." : "");
      } else if (ev.code === 1008) {
        text = "Connection closed: " + (explain[reason] || reason);
      } else if (ev.code === 1001) {
        text = "Connection closed: the server is shutting down.";
      } else if (ev.code === 1009) {
        text = "Connection closed: a message was larger than the server accepts.";
      } else if (!opened) {
        text = "Connection refused: the server could not be reached or turned the connection down.";
      } else if (ev.code === 1000) {
        return;
      } else {
        text = "Connection closed (code " + ev.code + (reason ? ", " + reason : "") + ").";
      }
      notice("closed", text + " Press Join to reconnect.", reason || String(ev.code));
    };
  }

  function send(text) {
    if (!ws || ws.readyState !== WebSocket.OPEN || !text) return;
    ws.send(JSON.stringify({ type: "message", room: room, data: { text: text } }));
  }

  // Demo sign-in, when the node serves demo tokens (a development setting):
  // the page asks for a token of a user and tier and shows the limits that
  // apply to it; the next Join signs in with it.
  function describe(l) {
    const part = (n, what) => n > 0 ? n + " " + what : "no " + what + " limit";
    return part(l.messages_per_minute, "messages a minute") + ", burst " + (l.message_burst || l.messages_per_minute) +
      ", " + part(l.max_message_size, "bytes a message");
  }
  fetch("/demo-token").then((r) => r.ok ? r.json() : null).then((d) => {
    if (!d || !d.demo) return;
    for (const t of d.tiers || []) {
      const o = document.createElement("option");
      o.value = t; o.textContent = t;
      $("tier").appendChild(o);
    }
    $("user").value = $("name").value;
    $("signin").hidden = false;
  }).catch(() => {});
  $("signin").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ user: $("user").value.trim(), tier: $("tier").value });
    fetch("/demo-token?" + q).then((r) => r.json().then((d) => ({ ok: r.ok, d: d }))).then(({ ok, d }) => {
      const id = $("identity");
      if (!ok) { id.dataset.state = "error"; id.textContent = d.error || "Sign-in refused"; return; }
      token = d.token;
      id.dataset.state = "connected";
      id.dataset.client = d.client;
      id.dataset.tier = d.tier;
      id.textContent = "Signed in as " + d.user + ", tier " + (d.tier || "default") + ": " + describe(d.limits) + ". Press Join.";
      if (!$("name").value) $("name").value = d.user;
    }).catch(() => { $("identity").textContent = "Sign-in failed"; });
  });
  $("join").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
  $("send").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("text").value.trim();
    if (t) { send(t); $("text").value = ""; }
  });
  $("flood-btn").addEventListener("click", () => { for (let i = 1; i <= 15; i++) send("flood " + i); });
  const q = new URLSearchParams(location.search);
  $("name").value = q.get("name") || localStorage.getItem("rt-name") || "";
  if (q.get("room")) $("room").value = q.get("room");
  $("name").addEventListener("change", () => localStorage.setItem("rt-name", $("name").value));
})();
