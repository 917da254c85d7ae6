// Opinion Market dashboard: markets with live price and prediction, a chart per market, platform and health
// panels. Talks to the public API with the credential given once (URL fragment #key=... or the sign-in form),
// and to the WebSocket protocol (docs/websocket.md), resuming each channel from its last sequence number.
"use strict";

const API = "/api/v1";
const TIMEFRAMES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const fmt1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const pct = v => (v == null ? "–" : `${(v * 100).toFixed(1)}%`);
const $ = id => document.getElementById(id);

const state = {
  key: null, markets: new Map(), selected: null, timeframe: "24h", chart: null,
  series: [[], [], []], lastSeq: {}, ws: null, retry: 0,
};

function credential() {
  if (location.hash.startsWith("#key=")) {
    sessionStorage.setItem("om-key", decodeURIComponent(location.hash.slice(5)));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("om-key");
}

async function api(path, options = {}) {
  const reply = await fetch(API + path, {
    ...options,
    headers: { authorization: `Bearer ${state.key}`, "content-type": "application/json", ...(options.headers || {}) },
  });
  if (reply.status === 401) { signOut(); throw new Error("unauthenticated"); }
  const body = await reply.json().catch(() => null);
  if (!reply.ok) throw new Error((body && body.detail) || `HTTP ${reply.status}`);
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

// --- markets ---------------------------------------------------------------------------------------

function market(id) {
  if (!state.markets.has(id)) {
    state.markets.set(id, { market_id: id, question: null });
    fillQuestion(id);
    subscribe([`market/${id}`, `market/${id}/predictions`]);
  }
  return state.markets.get(id);
}

async function fillQuestion(id) {
  try {
    const m = await api(`/markets/${encodeURIComponent(id)}`);
    Object.assign(state.markets.get(id), { question: m.question, status: m.status, close_at: m.close_at,
      current_price: state.markets.get(id).current_price ?? m.current_price });
    renderMarkets();
  } catch (e) { /* the market list still shows the id */ }
}

async function loadMarkets() {
  try {
    const page = await api("/markets?sort=volume_24h&order=desc&limit=50");
    for (const item of page.items || []) Object.assign(market(item.market_id), item);
  } catch (e) { /* analytics not reachable: markets arrive with the system updates */ }
  renderMarkets();
}

function renderMarkets() {
  const body = $("markets");
  const rows = [...state.markets.values()].sort((a, b) => (b.volume_24h || 0) - (a.volume_24h || 0)).slice(0, 30);
  if (!rows.length) return;
  body.replaceChildren(...rows.map(m => {
    const change = m.price_change_24h;
    const tr = row([
      m.question || m.market_id, pct(m.current_price), el("td", pct(m.predicted_probability), "pred"),
      el("td", change == null ? "–" : `${change >= 0 ? "+" : ""}${change.toFixed(1)}%`, change >= 0 ? "up" : "down"),
      m.volume_24h == null ? "–" : fmt.format(m.volume_24h),
    ]);
    tr.dataset.market = m.market_id;
    if (m.market_id === state.selected) tr.className = "selected";
    tr.addEventListener("click", () => select(m.market_id));
    return tr;
  }));
}

// --- the selected market ---------------------------------------------------------------------------

async function select(id) {
  state.selected = id;
  const m = market(id);
  $("detail").classList.remove("hidden");
  $("detail-question").textContent = m.question || id;
  $("detail-meta").textContent = `${id} · ${m.status || ""}${m.close_at ? " · closes " + new Date(m.close_at).toLocaleString() : ""}`;
  renderMarkets();
  await Promise.all([loadChart(), loadTrades(), loadCandles(), loadExplanation()]);
}

async function loadChart() {
  const id = state.selected, since = new Date(Date.now() - TIMEFRAMES[state.timeframe] * 1000).toISOString();
  const q = `from=${encodeURIComponent(since)}`;
  let [prices, predictions] = await Promise.all([
    api(`/markets/${encodeURIComponent(id)}/price-history?${q}`).catch(() => null),
    api(`/ai-analytics/predictions/${encodeURIComponent(id)}/history?${q}&limit=1000`).catch(() => null),
  ]);
  if (prices === null) { // no price history service: the latest trades carry the prices too
    const trades = await api(`/markets/${encodeURIComponent(id)}/trades?limit=1000`).catch(() => []);
    prices = listOf(trades).filter(t => Date.parse(t.executed_at) >= Date.parse(since));
  }
  const points = [];
  for (const p of listOf(prices)) points.push([Date.parse(p.at || p.executed_at || p.timestamp) / 1000, p.price ?? p.price_after, null]);
  for (const p of listOf(predictions)) points.push([Date.parse(p.occurred_at) / 1000, null, p.probability]);
  if (!points.length && state.markets.get(id).current_price != null) {
    points.push([Date.now() / 1000, state.markets.get(id).current_price, state.markets.get(id).predicted_probability ?? null]);
  }
  points.sort((a, b) => a[0] - b[0]);
  state.series = [points.map(p => p[0]), carry(points.map(p => p[1])), carry(points.map(p => p[2]))];
  drawChart();
}

const listOf = body => (Array.isArray(body) ? body : (body && (body.items || body.points || body.prices)) || []);

function carry(values) { // a step line: each series keeps its last value where the other one moved
  let last = null;
  return values.map(v => (v == null ? last : (last = v)));
}

function drawChart() {
  const box = $("chart");
  const opts = {
    width: Math.max(320, box.clientWidth || 900), height: 260,
    series: [{}, { label: "price", stroke: "#38bdf8", width: 2 }, { label: "prediction", stroke: "#f59e0b", width: 2, dash: [6, 4] }],
    scales: { y: { range: [0, 1] } },
    axes: [{ stroke: "#94a3b8" }, { stroke: "#94a3b8", values: (u, ticks) => ticks.map(t => `${Math.round(t * 100)}%`) }],
  };
  if (state.chart) state.chart.destroy();
  state.chart = new uPlot(opts, state.series, box);
  markLast();
}

function addPoint(price, prediction, at) {
  const [t, p, q] = state.series;
  t.push(at); p.push(price ?? p.at(-1) ?? null); q.push(prediction ?? q.at(-1) ?? null);
  if (state.chart) state.chart.setData(state.series);
  markLast();
}

function markLast() {
  const last = state.series[1].at(-1);
  $("chart").dataset.lastPrice = last == null ? "" : String(last);
}

async function loadTrades() {
  const trades = await api(`/markets/${encodeURIComponent(state.selected)}/trades?limit=15`).catch(() => []);
  $("trades").replaceChildren(...listOf(trades).map(t => row([
    new Date(t.executed_at).toLocaleTimeString(), t.user_id, `${t.side} ${t.outcome}`, pct(t.price_after),
  ])));
}

async function loadCandles() {
  const body = await api(`/markets/${encodeURIComponent(state.selected)}/candles?timeframe=${state.timeframe}`).catch(() => null);
  $("candles").replaceChildren(...listOf(body || {}).slice(-12).map(c => row([
    new Date(c.start || c.t || c.bucket).toLocaleString(), pct(c.open), pct(c.high), pct(c.low), pct(c.close),
    c.volume == null ? "–" : fmt.format(c.volume),
  ])));
}

async function loadExplanation() {
  const list = $("explanation");
  try {
    const p = await api(`/ai-analytics/predictions/${encodeURIComponent(state.selected)}`);
    const items = (p.contributions || []).slice(0, 6).map(c =>
      el("li", `${c.feature}: ${c.contribution >= 0 ? "+" : ""}${(c.contribution * 100).toFixed(1)} pts`));
    list.replaceChildren(el("li", `YES ${pct(p.probability)} · confidence ${pct(p.confidence)} · risk ${p.risk_level} · model ${p.model_version}`), ...items);
  } catch (e) {
    list.replaceChildren(el("li", `no prediction yet (${e.message})`, "muted"));
  }
}

// --- system and health -----------------------------------------------------------------------------

function renderSystem(update) {
  const m = update.system_metrics;
  for (const key of ["total_users", "active_users", "active_markets", "total_trades_24h", "total_volume_24h"]) {
    $(key).textContent = fmt.format(m[key]);
  }
  for (const top of update.top_markets || []) Object.assign(market(top.market_id), top);
  renderMarkets();
}

// Analytics' platform health: a list of each service's figures (`services`), or a plain {name: status} map.
function renderHealth(health) {
  const services = (health && (health.services || health)) || {};
  const entries = Array.isArray(services) ? services.map(s => [s.service, s]) : Object.entries(services);
  $("health").replaceChildren(...entries.map(([name, value]) => {
    const li = el("li");
    if (value && typeof value === "object" && "up" in value) {
      const reason = value.error ? `down: ${String(value.error).split(":")[0]}` : "down";
      li.append(el("span", name), el("span", value.up ? healthSummary(value) : reason, value.up ? "ok" : "bad"));
      if (value.error) li.title = value.error;
    } else {
      const text = typeof value === "object" && value !== null ? (value.status || JSON.stringify(value)) : String(value);
      li.append(el("span", name), el("span", text, /ok|up|healthy|ready/i.test(text) ? "ok" : "bad"));
    }
    return li;
  }));
}

function healthSummary(s) {
  const parts = ["up"];
  if (s.processing_rate != null) parts.push(`${fmt1.format(s.processing_rate)}/s`);
  if (s.http_p99_s != null) parts.push(`p99 ${fmt.format(s.http_p99_s * 1000)} ms`);
  if (s.consumer_lag && s.consumer_lag.length) parts.push(`lag ${s.consumer_lag.reduce((n, l) => n + l.lag, 0)}`);
  return parts.join(" · ");
}

async function pollHealth() {
  try { renderHealth(await api("/ai-analytics/analytics/system/health")); }
  catch (e) { $("health").replaceChildren(el("li", `unavailable: ${e.message}`, "bad")); }
}

// --- live updates ----------------------------------------------------------------------------------

function subscribe(channels) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN && state.ws.authenticated) {
    state.ws.send(JSON.stringify({ type: "subscribe", id: `s${Date.now()}`, channels }));
  }
}

function onMessage(msg) {
  if (msg.channel && msg.seq != null) state.lastSeq[msg.channel] = msg.seq;
  switch (msg.type) {
    case "welcome": {
      state.ws.authenticated = true; state.retry = 0;
      setStatus("live", "live");
      const channels = ["system", "system/health"];
      for (const id of state.markets.keys()) channels.push(`market/${id}`, `market/${id}/predictions`);
      const since = Object.fromEntries(channels.filter(c => c in state.lastSeq).map(c => [c, state.lastSeq[c]]));
      state.ws.send(JSON.stringify({ type: "subscribe", id: "resume", channels, since }));
      break;
    }
    case "snapshot": if (msg.message) onMessage(msg.message); break;
    case "analytics_update": renderSystem(msg); break;
    case "health_update": renderHealth(msg.data); break;
    case "market_update": {
      const m = Object.assign(market(msg.market.market_id), msg.market);
      renderMarkets();
      if (m.market_id === state.selected) {
        addPoint(m.current_price, m.predicted_probability, Date.parse(msg.timestamp) / 1000);
        clearTimeout(state.tradesTimer);
        state.tradesTimer = setTimeout(loadTrades, 500); // at most one reload per burst of updates
      }
      break;
    }
    case "prediction_update": {
      const p = msg.prediction, m = market(p.market_id);
      m.predicted_probability = p.probability; renderMarkets();
      if (p.market_id === state.selected) addPoint(null, p.probability, Date.parse(msg.timestamp) / 1000);
      break;
    }
    default: break; // ack, pong, heartbeat, backfill
  }
}

function setStatus(text, kind) { const s = $("status"); s.textContent = text; s.className = `status ${kind || ""}`; }

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws`;
  $("wsurl").textContent = url;
  setStatus(state.retry ? "reconnecting…" : "connecting…");
  const ws = (state.ws = new WebSocket(url));
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: state.key }));
  ws.onmessage = e => onMessage(JSON.parse(e.data));
  ws.onclose = e => {
    if (e.code === 4001) { signOut(); return; }
    const wait = Math.min(10, 2 ** state.retry++);
    setStatus(`disconnected (${e.code}); retrying in ${wait}s`, "down");
    setTimeout(connect, wait * 1000);
  };
}

// --- start -----------------------------------------------------------------------------------------

function signOut() {
  sessionStorage.removeItem("om-key");
  $("signin").classList.remove("hidden"); $("main").classList.add("hidden");
  setStatus("signed out", "down");
}

function start() {
  state.key = credential();
  $("signin-form").addEventListener("submit", e => {
    e.preventDefault(); sessionStorage.setItem("om-key", $("signin-key").value.trim()); location.reload();
  });
  if (!state.key) { signOut(); return; }
  for (const button of document.querySelectorAll(".timeframes button")) {
    button.addEventListener("click", () => {
      state.timeframe = button.dataset.tf;
      for (const b of document.querySelectorAll(".timeframes button")) b.classList.toggle("active", b === button);
      if (state.selected) { loadChart(); loadCandles(); }
    });
  }
  window.omDashboard = { state, select };
  loadMarkets(); pollHealth(); setInterval(pollHealth, 15000); connect();
}

document.addEventListener("DOMContentLoaded", start);
