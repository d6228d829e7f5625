// The shardcast console: connect as any client, watch the event stream,
// publish, join rooms, and watch the server (stats and fan-out latency).
// Tokens and the API key stay in this page (no storage, no other origin).

import { formatMicros, lineChart, parseHgrm, percentilePlot } from "/console/plot.js";

const $ = (id) => document.getElementById(id);
const settings = JSON.parse(document.querySelector('meta[name="shardcast-console"]').content);

const MAX_ROWS = 500;
const STATS_EVERY_MS = 1000;
const LATENCY_EVERY_MS = 5000;
const SAMPLES = 120;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
/** Close codes after which reconnecting cannot help. */
const FINAL_CODES = new Set([4001]);

// ---- connection ---------------------------------------------------------

/** The endpoints a console can open, by `#kind` value. */
function kinds() {
  const list = [];
  for (const type of settings.client_types) {
    const device = settings.device_types.includes(type);
    list.push({ value: `type:${type}`, label: `${device ? "device" : "client"}: ${type}`, path: () => `/ws/${encodeURIComponent(type)}` });
  }
  list.push({ value: "user-socket", label: "per-user socket", target: "User id", path: (id) => `/api/v1/websocket/ws/${encodeURIComponent(id)}` });
  list.push({ value: "monitor-all", label: "device monitor: all devices", path: () => "/ws/devices/all" });
  list.push({ value: "monitor-one", label: "device monitor: one device", target: "Device id", path: (id) => `/ws/devices/${encodeURIComponent(id)}` });
  return list;
}
const KINDS = kinds();

let socket = null;
let intended = false;
let attempts = 0;
let retry = null;
/** Rooms this page asked to join: joined again after a reconnect. */
const rooms = new Set();

function setState(kind, text) {
  const state = $("state");
  state.className = `state ${kind}`;
  state.textContent = text;
  state.dataset.state = kind;
}

function tokenSub(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4))).sub || "";
  } catch {
    return "";
  }
}

function defaultBase() {
  if (settings.ws_port) {
    return `${settings.ws_tls ? "wss" : "ws"}://${location.hostname}:${settings.ws_port}`;
  }
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
}

function currentKind() {
  return KINDS.find((k) => k.value === $("kind").value) || KINDS[0];
}

function socketUrl() {
  const kind = currentKind();
  const base = $("ws-base").value.trim().replace(/\/+$/, "");
  const token = $("token").value.trim();
  return `${base}${kind.path($("target").value.trim())}?token=${encodeURIComponent(token)}`;
}

function describeClose(event) {
  const reason = event.reason ? ` ${event.reason}` : "";
  return `${event.code}${reason}`;
}

function open() {
  clearTimeout(retry);
  retry = null;
  if (socket) {
    intended = true;
    socket.close(1000);
  }
  const kind = currentKind();
  if (kind.target && !$("target").value.trim()) {
    setState("closed", `closed: enter a ${kind.target.toLowerCase()}`);
    return;
  }
  let ws;
  try {
    ws = new WebSocket(socketUrl());
  } catch (error) {
    setState("closed", `closed: ${error.message}`);
    return;
  }
  socket = ws;
  intended = false;
  let opened = false;
  setState(attempts ? "reconnecting" : "connecting", attempts ? `reconnecting (attempt ${attempts + 1})` : "connecting");
  ws.onopen = () => {
    if (socket !== ws) return;
    opened = true;
    attempts = 0;
    setState("connected", "connected");
    for (const room of rooms) send({ type: "subscribe", room });
  };
  ws.onmessage = (message) => {
    if (socket === ws) receive(message.data);
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    renderRooms();
    if (intended) {
      setState("closed", `closed ${describeClose(event)}`);
    } else if (!opened && attempts === 0) {
      // Refused before the upgrade: 401/403/404 all look like 1006 here.
      setState("closed", `closed ${describeClose(event)}: refused or unreachable (check the token and server)`);
    } else if (FINAL_CODES.has(event.code)) {
      setState("closed", `closed ${describeClose(event)}`);
    } else {
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempts) * (0.5 + Math.random() / 2);
      attempts += 1;
      setState("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s (closed ${describeClose(event)})`);
      retry = setTimeout(open, delay);
    }
  };
}

function close() {
  clearTimeout(retry);
  retry = null;
  attempts = 0;
  if (socket) {
    intended = true;
    socket.close(1000, "closed from the console");
  } else {
    setState("closed", "closed");
  }
}

function send(message) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    $("room-error").textContent = "not connected";
    return false;
  }
  socket.send(JSON.stringify(message));
  return true;
}

// ---- the event stream ---------------------------------------------------

let paused = false;
let held = [];
let total = 0;
const list = [];

function summary(obj) {
  if (obj === null || typeof obj !== "object") {
    return { topic: "", offset: "", name: "(not an object)", reply: true };
  }
  if (typeof obj.event === "string") {
    return { topic: obj.topic || (obj.room ? `room:${obj.room}` : ""), offset: obj.offset ?? "", name: obj.event, reply: false };
  }
  if (typeof obj.device_id === "string") {
    return { topic: `device:${obj.device_id}`, offset: "", name: `status ${obj.status}`, reply: false };
  }
  return { topic: obj.room ? `room:${obj.room}` : "", offset: "", name: `${obj.type ?? "?"}${obj.code ? ` (${obj.code})` : ""}`, reply: true };
}

function receive(text) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    obj = text;
  }
  if (obj && typeof obj === "object") {
    if (obj.type === "subscribed") rooms.add(obj.room);
    if (obj.type === "unsubscribed") rooms.delete(obj.room);
    if (obj.type === "subscribed" || obj.type === "unsubscribed") renderRooms();
    if (obj.type === "error") $("room-error").textContent = `${obj.code}: ${obj.message}`;
  }
  const entry = { text, obj, at: new Date() };
  total += 1;
  $("event-count").textContent = String(total);
  if (paused) {
    held.push(entry);
    $("held").textContent = `paused: ${held.length} held`;
  } else {
    append(entry);
  }
}

function matches(entry, filter) {
  return !filter || entry.text.toLowerCase().includes(filter);
}

function append(entry) {
  const s = summary(entry.obj);
  const tr = document.createElement("tr");
  tr.tabIndex = 0;
  if (s.reply) tr.className = "reply";
  const time = (entry.obj && (entry.obj.timestamp || entry.obj.updated_at)) || entry.at.toISOString();
  // The time of day; the full timestamp is in the JSON.
  const clock = String(time).replace(/^.*T/, "").replace("Z", "");
  for (const cell of [clock, s.topic, String(s.offset), s.name]) {
    const td = document.createElement("td");
    td.textContent = cell;
    tr.append(td);
  }
  tr.addEventListener("click", () => show(entry, tr));
  tr.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      show(entry, tr);
    }
  });
  entry.row = tr;
  tr.hidden = !matches(entry, $("filter").value.trim().toLowerCase());
  $("events").tBodies[0].prepend(tr);
  list.push(entry);
  while (list.length > MAX_ROWS) list.shift().row.remove();
}

function show(entry, tr) {
  for (const row of $("events").tBodies[0].rows) row.removeAttribute("aria-selected");
  tr.setAttribute("aria-selected", "true");
  $("event-detail").textContent = typeof entry.obj === "string" ? entry.obj : JSON.stringify(entry.obj, null, 2);
}

function setPaused(on) {
  paused = on;
  $("pause").setAttribute("aria-pressed", String(on));
  $("pause").textContent = on ? "Resume" : "Pause";
  if (!on) {
    for (const entry of held) append(entry);
    held = [];
    $("held").textContent = "";
  }
}

function applyFilter() {
  const filter = $("filter").value.trim().toLowerCase();
  for (const entry of list) entry.row.hidden = !matches(entry, filter);
}

// ---- publishing -----------------------------------------------------------

/** Parses a JSON field; marks it invalid and says why, or returns the value. */
function jsonField(input, error, what) {
  try {
    const value = JSON.parse(input.value);
    input.removeAttribute("aria-invalid");
    error.textContent = "";
    return { ok: true, value };
  } catch (e) {
    input.setAttribute("aria-invalid", "true");
    error.textContent = `${what} is not valid JSON: ${e.message}`;
    return { ok: false };
  }
}

function validatePublish() {
  const data = jsonField($("pub-data"), $("pub-error"), "data");
  const named = $("pub-topic").value.trim() && $("pub-event").value.trim();
  if (data.ok && !named) $("pub-error").textContent = "topic and event are required";
  $("publish").disabled = !(data.ok && named);
  return data;
}

function validateBatch() {
  const body = jsonField($("batch-data"), $("batch-error"), "the body");
  const ok = body.ok && body.value && Array.isArray(body.value.events);
  if (body.ok && !ok) $("batch-error").textContent = 'the body must be {"events":[…]}';
  $("publish-batch").disabled = !ok;
  return body;
}

async function post(path, body) {
  const result = $("publish-result");
  result.className = "result";
  result.textContent = "…";
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { Authorization: `Bearer ${$("api-key").value.trim()}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
    });
    const text = await response.text();
    result.className = `result ${response.ok ? "ok" : "bad"}`;
    result.textContent = `${response.status} ${text}`;
  } catch (error) {
    result.className = "result bad";
    result.textContent = `request failed: ${error.message}`;
  }
}

function publish(event) {
  event.preventDefault();
  const data = validatePublish();
  if (!data.ok || $("publish").disabled) return;
  post("/api/v1/publish", { topic: $("pub-topic").value.trim(), event: $("pub-event").value.trim(), data: data.value });
}

function publishBatch(event) {
  event.preventDefault();
  const body = validateBatch();
  if (!$("publish-batch").disabled) post("/api/v1/publish/batch", body.value);
}

function sendStatus(event) {
  event.preventDefault();
  const device = $("status-device").value.trim();
  if (!device) return;
  const body = { status: $("status-value").value };
  for (const [key, id] of [["mac_address", "status-mac"], ["serial_number", "status-serial"], ["result", "status-result"]]) {
    const value = $(id).value.trim();
    if (value) body[key] = value;
  }
  post(`/api/v1/devices/${encodeURIComponent(device)}/status`, body);
}

// ---- rooms ------------------------------------------------------------------

function renderRooms() {
  const joined = [...rooms];
  $("joined").textContent = joined.length ? joined.join(", ") + (socket ? "" : " (rejoined on connect)") : "none";
}

function subscribe(event) {
  event.preventDefault();
  const room = $("room").value.trim();
  $("room-error").textContent = "";
  if (room) send({ type: "subscribe", room });
}

function unsubscribe() {
  const room = $("room").value.trim();
  $("room-error").textContent = "";
  rooms.delete(room);
  renderRooms();
  if (room) send({ type: "unsubscribe", room });
}

function publishToRoom() {
  const data = jsonField($("room-data"), $("room-error"), "data");
  const room = $("room").value.trim();
  const name = $("room-event").value.trim();
  if (!data.ok) return;
  if (!room || !name) {
    $("room-error").textContent = "room and event are required";
    return;
  }
  send({ type: "publish", room, event: name, data: data.value });
}

// ---- the server -------------------------------------------------------------

const samples = [];
let lastHgrm = null;

async function refreshStats() {
  try {
    const response = await fetch("/ws/stats", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status}`);
    const stats = await response.json();
    $("stats-error").textContent = "";
    const shards = stats.shards || [];
    const sum = (key) => shards.reduce((n, s) => n + (s[key] || 0), 0);
    // Every shard dispatches every event: the count is any one shard's.
    const events = shards.reduce((n, s) => Math.max(n, s.events || 0), 0);
    $("stats-total").textContent = String(stats.total);
    $("stats-rooms").textContent = String(stats.rooms ?? 0);
    $("stats-events").textContent = String(events);
    $("stats-deliveries").textContent = String(sum("deliveries"));
    $("stats-slow").textContent = String(sum("slow_consumers"));
    $("stats-types").textContent = Object.entries(stats.by_type || {}).map(([t, n]) => `${t} ${n}`).join(" · ");
    const body = $("shards").tBodies[0];
    body.replaceChildren(
      ...shards.map((s) => {
        const tr = document.createElement("tr");
        for (const v of [s.shard, s.connections, s.events, s.deliveries, s.slow_consumers]) {
          const td = document.createElement("td");
          td.textContent = String(v);
          tr.append(td);
        }
        return tr;
      }),
    );
    samples.push(stats.total);
    if (samples.length > SAMPLES) samples.shift();
    lineChart($("conn-graph"), samples, SAMPLES);
  } catch (error) {
    $("stats-error").textContent = `/ws/stats: ${error.message}`;
  }
}

function percentileOf(points, q) {
  const hit = points.find((p) => p.percentile >= q);
  return hit ? hit.value : NaN;
}

async function refreshLatency() {
  try {
    const response = await fetch("/debug/latency", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status}`);
    const hgrm = parseHgrm(await response.text());
    lastHgrm = hgrm;
    const drawn = percentilePlot($("latency-plot"), hgrm);
    $("latency-plot").dataset.points = String(drawn);
    $("latency-note").textContent = hgrm.count
      ? `${hgrm.count} samples · p50 ${formatMicros(percentileOf(hgrm.points, 0.5))} · p99 ${formatMicros(percentileOf(hgrm.points, 0.99))} · max ${formatMicros(hgrm.max)} (publish accepted → written to the socket)`
      : "no fan-out recorded yet";
  } catch (error) {
    $("latency-note").textContent = `/debug/latency: ${error.message}`;
  }
}

// ---- start --------------------------------------------------------------------

function start() {
  $("version").textContent = settings.version;
  $("mode").textContent = settings.dev ? "dev mode" : "enter a token and the API key";
  for (const kind of KINDS) $("kind").append(new Option(kind.label, kind.value));
  $("kind").value = KINDS.some((k) => k.value === "type:user") ? "type:user" : KINDS[0].value;
  const onKind = () => {
    const kind = currentKind();
    $("target-row").hidden = !kind.target;
    $("target-name").textContent = kind.target || "Id";
    if (kind.value === "user-socket" && !$("target").value) $("target").value = tokenSub($("token").value);
  };
  $("kind").addEventListener("change", onKind);
  $("token").value = settings.token;
  $("api-key").value = settings.api_key;
  $("ws-base").value = defaultBase();
  onKind();
  $("connect-form").addEventListener("submit", (e) => {
    e.preventDefault();
    attempts = 0;
    open();
  });
  $("disconnect").addEventListener("click", close);
  $("pause").addEventListener("click", () => setPaused(!paused));
  $("filter").addEventListener("input", applyFilter);
  $("clear").addEventListener("click", () => {
    for (const entry of list) entry.row.remove();
    list.length = 0;
    held = [];
    total = 0;
    $("event-count").textContent = "0";
    $("held").textContent = "";
  });
  for (const id of ["pub-topic", "pub-event", "pub-data"]) $(id).addEventListener("input", validatePublish);
  $("batch-data").addEventListener("input", validateBatch);
  $("publish-form").addEventListener("submit", publish);
  $("batch-form").addEventListener("submit", publishBatch);
  $("status-form").addEventListener("submit", sendStatus);
  $("room-form").addEventListener("submit", subscribe);
  $("unsubscribe").addEventListener("click", unsubscribe);
  $("room-publish").addEventListener("click", publishToRoom);
  $("latency-refresh").addEventListener("click", refreshLatency);
  validatePublish();
  validateBatch();
  renderRooms();
  refreshStats();
  refreshLatency();
  setInterval(refreshStats, STATS_EVERY_MS);
  setInterval(refreshLatency, LATENCY_EVERY_MS);
  // The charts draw in pixels: redraw them at the new width.
  window.addEventListener("resize", () => {
    lineChart($("conn-graph"), samples, SAMPLES);
    if (lastHgrm) percentilePlot($("latency-plot"), lastHgrm);
  });
  if (settings.dev && settings.token) open();
}

start();
