// The ops dashboard: polls /v1/stats every 2 s and renders it. No dependencies, no build step.
"use strict";

const REFRESH_MS = 2000;
const KEY_STORAGE = "caption-verifier.api-key";
const SVG = "http://www.w3.org/2000/svg";
const STATUSES = ["succeeded", "failed", "canceled"];

const $ = (selector) => document.querySelector(selector);
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

function apiKey() {
  try { return window.localStorage.getItem(KEY_STORAGE) || ""; } catch (e) { return ""; }
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function formatSeconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(2)} s`;
  return `${Math.round(value / 60)} min`;
}

function formatAgo(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function setText(testId, text, value) {
  const el = byTestId(testId);
  if (!el) return;
  el.textContent = String(text);
  if (value !== undefined) el.dataset.value = value === null ? "" : String(value);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function showBanner(message, level) {
  const banner = byTestId("banner");
  banner.textContent = message;
  banner.className = level === "warn" ? "banner warn" : "banner";
  banner.dataset.level = level || "error";
  banner.hidden = false;
}

function hideBanner() {
  const banner = byTestId("banner");
  banner.hidden = true;
  banner.textContent = "";
  delete banner.dataset.level;
}

function setState(state, title) {
  const dot = byTestId("state");
  dot.dataset.state = state;
  dot.textContent = state.replace("_", " ");
  dot.title = title || state;
}

// --- rendering ------------------------------------------------------------------------------

function renderCards(stats) {
  for (const status of STATUSES) setText(`total-${status}`, stats.totals[status], stats.totals[status]);
  document.querySelectorAll("[data-window]").forEach((node) => { node.textContent = `last ${stats.window_minutes} min`; });
  for (const p of ["p50", "p95", "p99"]) setText(`latency-${p}`, formatSeconds(stats.latency[p]), stats.latency[p]);
  setText("latency-count", stats.latency.count, stats.latency.count);
  const q = stats.queues;
  setText("depth-verify", q.depths.verify, q.depths.verify);
  setText("depth-webhooks", q.depths.webhooks, q.depths.webhooks);
  setText("queued-jobs", q.queued_jobs, q.queued_jobs);
  setText("running-jobs", q.running_jobs, q.running_jobs);
  setText("oldest-age", q.oldest_queued_age_seconds === null ? "none" : formatSeconds(q.oldest_queued_age_seconds),
          q.oldest_queued_age_seconds);
  setText("workers-warm", stats.workers.warm, stats.workers.warm);
  setText("workers-alive", stats.workers.alive, stats.workers.alive);
}

function renderChart(rows) {
  const chart = $("#chart");
  const width = Math.max(300, Math.round(chart.clientWidth || 900));
  const height = 240;
  const pad = { left: 40, right: 56, top: 10, bottom: 24 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren();

  const maxJobs = Math.max(1, ...rows.map((r) => r.succeeded + r.failed + r.canceled));
  const latencies = rows.flatMap((r) => [r.p50, r.p95]).filter((v) => v !== null && v !== undefined);
  const maxLatency = latencies.length ? Math.max(...latencies) * 1.1 : 1;
  const step = plotW / Math.max(1, rows.length);
  const x = (i) => pad.left + i * step;
  const yJobs = (n) => pad.top + plotH - (n / maxJobs) * plotH;
  const yLat = (s) => pad.top + plotH - (s / maxLatency) * plotH;

  chart.append(svg("line", { class: "axis", x1: pad.left, y1: pad.top + plotH, x2: pad.left + plotW, y2: pad.top + plotH }));
  chart.append(svg("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left, y2: pad.top + plotH }));
  const label = (text, attrs) => { const t = svg("text", attrs); t.textContent = text; chart.append(t); };
  label(`${maxJobs}`, { x: pad.left - 6, y: pad.top + 10, "text-anchor": "end" });
  label("0", { x: pad.left - 6, y: pad.top + plotH, "text-anchor": "end" });
  label("jobs/min", { x: 2, y: pad.top + plotH / 2 });
  if (latencies.length) {
    label(formatSeconds(maxLatency), { x: pad.left + plotW + 4, y: pad.top + 10 });
    label("latency", { x: pad.left + plotW + 4, y: pad.top + plotH / 2 });
  }

  rows.forEach((row, i) => {
    let base = 0;
    for (const status of STATUSES) {
      const n = row[status];
      if (!n) continue;
      const top = yJobs(base + n);
      const rect = svg("rect", { class: status, x: x(i) + step * 0.15, width: Math.max(1, step * 0.7),
                                 y: top, height: yJobs(base) - top });
      const tip = svg("title");
      tip.textContent = `${row.minute}: ${n} ${status}`;
      rect.append(tip);
      chart.append(rect);
      base += n;
    }
    if (i % Math.ceil(rows.length / 6) === 0 || i === rows.length - 1) {
      label(row.minute.slice(11, 16), { x: x(i) + step / 2, y: height - 6, "text-anchor": "middle" });
    }
  });

  for (const p of ["p50", "p95"]) {
    const points = rows.map((r, i) => (r[p] === null || r[p] === undefined ? null : `${x(i) + step / 2},${yLat(r[p])}`));
    // Break the line where a minute had no finished job.
    let segment = [];
    const flush = () => {
      if (segment.length === 1) chart.append(svg("circle", { class: p, cx: segment[0].split(",")[0], cy: segment[0].split(",")[1], r: 4 }));
      else if (segment.length > 1) chart.append(svg("polyline", { class: p, points: segment.join(" ") }));
      segment = [];
    };
    for (const point of points) { if (point === null) flush(); else segment.push(point); }
    flush();
  }
}

function renderWorkers(workers) {
  const body = $("#workers");
  body.replaceChildren();
  if (!workers.list.length) {
    body.append(el("tr", {}, el("td", { colspan: "8", class: "empty" }, "no worker has been seen in the last hour")));
    return;
  }
  for (const w of workers.list) {
    const state = !w.alive ? ["dead", "down"] : w.model_loaded ? ["warm", "warm"] : ["cold", "no model"];
    body.append(el("tr", { "data-testid": "worker-row", "data-worker": w.name, "data-alive": String(w.alive),
                           "data-warm": String(w.model_loaded) },
      el("td", { class: "mono" }, w.name),
      el("td", {}, el("span", { class: `pill ${state[0]}` }, state[1])),
      el("td", {}, w.model || "–"),
      el("td", { "data-testid": "worker-device" }, w.device || "–"),
      el("td", { "data-testid": "worker-dtype" }, w.dtype || "–"),
      el("td", {}, (w.queues || []).join(", ")),
      el("td", {}, w.jobs ?? "–"),
      el("td", { title: w.last_seen || "" }, formatAgo(w.last_seen_seconds_ago))));
  }
}

function jobLink(id) {
  const link = el("a", { href: `/v1/jobs/${encodeURIComponent(id)}`, class: "mono", "data-testid": "failure-link",
                         target: "_blank", rel: "noopener" }, id.slice(0, 12));
  link.title = id;
  link.addEventListener("click", (event) => {
    // With a key, fetch the document with it (a plain link cannot carry the header).
    if (!apiKey() || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    fetch(link.href, { headers: authHeaders() })
      .then((r) => r.json())
      .then((doc) => { $("#job-json").textContent = JSON.stringify(doc, null, 2); $("#job-dialog").showModal(); })
      .catch((err) => showBanner(`Could not load job ${id}: ${err.message}`));
  });
  return link;
}

function renderFailures(groups) {
  const body = $("#failures");
  body.replaceChildren();
  if (!groups.length) {
    body.append(el("tr", {}, el("td", { colspan: "3", class: "empty" }, "no failed job in the window")));
    return;
  }
  for (const group of groups) {
    const links = el("td", {});
    group.latest.forEach((job, i) => {
      if (i) links.append(" ");
      links.append(jobLink(job.id));
    });
    const title = group.latest.length ? group.latest[0].message : "";
    body.append(el("tr", { "data-testid": "failure-group", "data-code": group.code },
      el("td", { title }, el("code", {}, group.code)),
      el("td", { "data-testid": `failure-count-${group.code}` }, group.count),
      links));
  }
}

function renderWebhooks(webhooks) {
  setText("webhooks-failed", webhooks.failed, webhooks.failed);
  const outcomes = Object.entries(webhooks.outcomes).map(([k, v]) => `${k}: ${v}`).join(" · ");
  setText("webhook-outcomes", outcomes || "no delivery in the window");
  const list = $("#webhook-failures");
  list.replaceChildren();
  for (const failure of webhooks.recent_failures.slice(0, 8)) {
    const item = el("li", {}, el("code", {}, failure.outcome), " ");
    if (failure.job_id) item.append(jobLink(failure.job_id), " ");
    item.append(failure.error || "");
    list.append(item);
  }
}

function render(stats) {
  renderCards(stats);
  renderChart(stats.throughput);
  renderWorkers(stats.workers);
  renderFailures(stats.failures);
  renderWebhooks(stats.webhooks);
  setText("updated-at", stats.generated_at, stats.generated_at);
  if (stats.state === "no_workers") {
    setState("no_workers", "no worker with a warm model");
    showBanner("No worker with a warm model is up: queued jobs are not being processed.", "warn");
  } else {
    setState("ok");
    hideBanner();
  }
  document.body.dataset.loaded = "true";
}

// --- polling --------------------------------------------------------------------------------

async function refresh() {
  const windowMinutes = $("#window").value;
  let response;
  try {
    response = await fetch(`/v1/stats?window=${windowMinutes}`, { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    setState("down", "the API does not answer");
    showBanner("The API does not answer; retrying.");
    return;
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (response.ok && body) {
    render(body);
    return;
  }
  const error = (body && body.error) || { code: `http_${response.status}`, message: response.statusText };
  if (response.status === 401 || response.status === 403) {
    setState("auth", error.message);
    showBanner(`Not allowed (${error.code}): ${error.message}. Enter an operator API key above.`, "warn");
  } else if (response.status === 503) {
    setState("down", error.message);
    showBanner(`Service unavailable (${error.code}): ${error.message}`);
  } else {
    setState("down", error.message);
    showBanner(`Stats failed with ${response.status} (${error.code}): ${error.message}`);
  }
  byTestId("banner").dataset.code = error.code;
}

async function loop() {
  await refresh();
  window.setTimeout(loop, REFRESH_MS);
}

function init() {
  const input = $("#api-key");
  input.value = apiKey();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    try { window.localStorage.setItem(KEY_STORAGE, input.value.trim()); } catch (e) { /* private mode */ }
    refresh();
  });
  $("#window").addEventListener("change", () => refresh());
  loop();
}

document.addEventListener("DOMContentLoaded", init);
