// The live sale dashboard: one EventSource on dashboard/events, a JSON snapshot a second.
// Plain script, no dependencies, no build step.
"use strict";

const EVENTS_URL = "dashboard/events";
const RECONNECT_MS = 2000;
const STALE_MS = 5000; // no snapshot for this long: the stream is as good as gone
const STACK = [ // bottom to top
  ["admitted", "--admitted"], ["limited", "--limited"], ["sold_out", "--sold-out"],
  ["refused", "--refused"], ["failed", "--failed"],
];

const numbers = new Intl.NumberFormat();
let source = null;
let lastSnapshotAt = 0;
let lastSeries = null;

function field(name) { return document.querySelector(`[data-field="${name}"]`); }

function show(name, value) {
  const element = field(name);
  if (element) element.textContent = value === null || value === undefined ? "—" : numbers.format(value);
}

function setConnection(state, text) {
  const badge = document.getElementById("connection");
  badge.className = `connection ${state}`;
  badge.textContent = text;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render(snapshot) {
  const outcomes = snapshot.outcomes;
  show("units_left", snapshot.units_left);
  show("available", snapshot.products.reduce((sum, product) => sum + product.available, 0));
  for (const [name, value] of Object.entries(outcomes.last_second)) show(`rate-${name}`, value);
  for (const [name, value] of Object.entries(outcomes.totals)) show(`total-${name}`, value);
  for (const [name, value] of Object.entries(snapshot.queue)) show(`queue-${name}`, value);
  show("confirmed", snapshot.orders.confirmed);
  show("rejected", snapshot.orders.rejected);
  for (const [name, value] of Object.entries(snapshot.orders.latency_ms)) show(`latency-${name}`, value);
  for (const element of document.querySelectorAll(".window")) element.textContent = outcomes.window_seconds;
  field("updated").textContent = new Date(snapshot.at * 1000).toLocaleTimeString();

  const products = document.querySelector("#products tbody");
  products.replaceChildren();
  for (const product of snapshot.products) {
    const row = products.insertRow();
    row.dataset.productId = product.id;
    cell(row, `${product.id} · ${product.name}`);
    cell(row, numbers.format(product.stock), "num units-left");
    cell(row, numbers.format(product.available), "num available");
    cell(row, product.sold_out ? "sold out" : "on sale", product.sold_out ? "state-sold-out" : "state-on-sale");
  }

  const recent = document.querySelector("#recent tbody");
  recent.replaceChildren();
  for (const order of snapshot.orders.recent) {
    const row = recent.insertRow();
    row.dataset.orderId = order.order_id;
    cell(row, order.order_id.slice(0, 8), "order-id").title = order.order_id;
    cell(row, String(order.product_id));
    cell(row, String(order.quantity), "num");
    const status = order.reason ? `${order.status} (${order.reason})` : order.status;
    cell(row, status, `status-${order.status}`);
    cell(row, order.latency_ms === null ? "—" : `${numbers.format(order.latency_ms)} ms`, "num");
  }
  lastSeries = outcomes.series;
  drawChart(outcomes.series);
}

function drawChart(series) {
  const canvas = document.getElementById("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== width * ratio || canvas.height !== height * ratio) {
    canvas.width = width * ratio;
    canvas.height = height * ratio;
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const styles = getComputedStyle(document.documentElement);
  const totals = series.map((second) => STACK.reduce((sum, [name]) => sum + second[name], 0));
  const top = Math.max(1, ...totals);
  const axis = 34, plot = height - 16, slot = (width - axis) / series.length, bar = Math.max(1, slot - 2);

  context.fillStyle = styles.getPropertyValue("--dim");
  context.font = "11px system-ui, sans-serif";
  context.textAlign = "right";
  context.fillText(numbers.format(top), axis - 6, 10);
  context.fillText("0", axis - 6, plot);
  context.textAlign = "left";
  context.fillText(`−${series.length} s`, axis, height - 2);
  context.textAlign = "right";
  context.fillText("now", width, height - 2);

  series.forEach((second, index) => {
    // The newest two seconds are still being flushed by some pods: drawn fainter.
    context.globalAlpha = index >= series.length - 2 ? 0.45 : 1;
    let y = plot;
    for (const [name, color] of STACK) {
      const h = (second[name] / top) * (plot - 14);
      if (h <= 0) continue;
      context.fillStyle = styles.getPropertyValue(color);
      context.fillRect(axis + index * slot, y - h, bar, h);
      y -= h;
    }
  });
  context.globalAlpha = 1;
}

function showProblem(problem) {
  const banner = document.getElementById("problem");
  banner.hidden = !problem;
  banner.textContent = problem ? `${problem.title}: ${problem.detail}` : "";
}

function connect() {
  if (source) source.close();
  setConnection("connecting", "connecting…");
  source = new EventSource(EVENTS_URL);
  source.addEventListener("snapshot", (event) => {
    lastSnapshotAt = Date.now();
    setConnection("live", "live");
    showProblem(null);
    render(JSON.parse(event.data));
  });
  source.addEventListener("problem", (event) => {
    lastSnapshotAt = Date.now();
    setConnection("live", "live (degraded)");
    showProblem(JSON.parse(event.data));
  });
  source.addEventListener("bye", () => setConnection("disconnected", "disconnected: server stopping, reconnecting…"));
  source.onerror = () => {
    setConnection("disconnected", "disconnected, reconnecting…");
    // EventSource retries by itself after a dropped stream, but gives up for good after an
    // answer that is not an event stream (a 502 from a proxy): then start over ourselves.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, RECONNECT_MS);
  };
}

setInterval(() => {
  if (lastSnapshotAt && Date.now() - lastSnapshotAt > STALE_MS && source.readyState !== EventSource.CONNECTING) {
    setConnection("disconnected", "disconnected (no data), reconnecting…");
    connect();
  }
}, 1000);

window.addEventListener("resize", () => { if (lastSeries) drawChart(lastSeries); });
connect();
