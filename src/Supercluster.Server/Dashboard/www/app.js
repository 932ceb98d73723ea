// Supercluster dashboard: runs (live charts from metrics.jsonl, read incrementally) and the playground
// (streamed completions over /v1/completions, search over /v1/search). No network access beyond this server.
"use strict";
const $ = (s) => document.querySelector(s);
const state = { info: {}, run: null, offset: 0, train: [], evals: [], tasks: [], charts: {}, timer: null, abort: null };

document.querySelectorAll("nav .tab").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav .tab").forEach((t) => t.classList.toggle("active", t === b));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === b.dataset.tab));
  Object.values(state.charts).forEach(resize);
}));

async function getJson(url) {
  // With --api-key-file the dashboard API needs the key too (it is entered in the playground's key field).
  const key = $("#api-key").value.trim();
  const r = await fetch(url, { cache: "no-store", headers: key ? { Authorization: "Bearer " + key } : {} });
  if (r.status === 401) { $("#key-label").hidden = false; $("#info").textContent = "enter the API key to see runs and use the model"; }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}
const fmt = (v, d = 4) => v == null ? "–" : (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString() : Number(v).toPrecision(d));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

async function loadInfo() {
  state.info = await getJson("/api/info");
  const i = state.info;
  $("#info").textContent = [i.model ? "model " + i.model : "no model", i.index != null ? i.index + " passages indexed" : null, i.runs_dir ? "runs: " + i.runs_dir : null].filter(Boolean).join(" · ");
  $("#no-model").hidden = !!i.model;
  $("#generate").disabled = !i.model;
  $("#search-box").hidden = i.index == null;
  $("#key-label").hidden = !i.api_key_required;
  if (!i.runs_dir) { $("#tab-playground").click(); }
}

async function loadRuns() {
  if (!state.info.runs_dir) return;
  const { runs } = await getJson("/api/runs");
  const body = $("#run-list tbody");
  body.innerHTML = "";
  $("#no-runs").hidden = runs.length > 0;
  for (const r of runs) {
    const tr = document.createElement("tr");
    tr.dataset.name = r.name;
    tr.className = r.name === state.run ? "selected" : "";
    tr.innerHTML = `<td>${esc(r.name)}</td><td><span class="status ${r.status}">${r.status}</span></td><td>${r.step}${r.steps ? "/" + r.steps : ""}</td><td>${fmt(r.loss)}</td><td>${fmt(r.val_loss)}</td>`;
    tr.addEventListener("click", () => selectRun(r.name));
    body.appendChild(tr);
  }
  if (!state.run && runs.length) selectRun(runs[0].name);
}

function selectRun(name) {
  state.run = name; state.offset = 0; state.train = []; state.evals = []; state.tasks = [];
  document.querySelectorAll("#run-list tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.name === name));
  $("#run-title").textContent = name;
  Object.values(state.charts).forEach((c) => c.destroy());
  state.charts = {};
  refreshRun();
}

async function refreshRun() {
  if (!state.run) return;
  const name = state.run;
  const detail = await getJson("/api/runs/" + encodeURIComponent(name).replace(/%2F/g, "/"));
  if (name !== state.run) return;
  $("#config").textContent = JSON.stringify(detail.config, null, 2);
  const cb = $("#checkpoints tbody");
  cb.innerHTML = detail.checkpoints.length ? "" : `<tr><td colspan="3" class="muted">none yet</td></tr>`;
  for (const c of detail.checkpoints) cb.insertAdjacentHTML("beforeend", `<tr><td>${c.step}</td><td>${fmt(c.val_loss)}${c.val_loss_step != null && c.val_loss_step !== c.step ? ` (at step ${c.val_loss_step})` : ""}</td><td>${esc(c.dir)}</td></tr>`);
  // Metrics: only the lines added since the last read.
  let more = true;
  while (more) {
    const m = await getJson(`/api/runs/${encodeURIComponent(name).replace(/%2F/g, "/")}/metrics?offset=${state.offset}`);
    if (name !== state.run) return;
    if (m.offset < state.offset) { state.train = []; state.evals = []; state.tasks = []; }
    more = m.records.length > 0 && m.offset !== state.offset && m.records.length >= 20000;
    state.offset = m.offset;
    for (const r of m.records) {
      if (r.type === "train") state.train.push(r);
      else if (r.type === "eval") state.evals.push(r);
      else if (r.type === "task_eval") state.tasks.push(r);
      else if (r.type === "sample") $("#sample").textContent = `step ${r.step}: ${r.text}`;
    }
  }
  drawCharts();
}

function series(rows, key) { return rows.filter((r) => r[key] != null).map((r) => [r.step, r[key]]); }

function drawCharts() {
  // Loss: train and val on one x axis (union of steps; gaps where a series has no point).
  const steps = [...new Set([...state.train.map((r) => r.step), ...state.evals.map((r) => r.step)])].sort((a, b) => a - b);
  const tl = new Map(state.train.map((r) => [r.step, r.loss])), vl = new Map(state.evals.map((r) => [r.step, r.val_loss]));
  plot("loss", [steps, steps.map((s) => tl.get(s) ?? null), steps.map((s) => vl.get(s) ?? null)], [
    { label: "train", stroke: "#2a8be0", spanGaps: true }, { label: "val", stroke: "#e0702a", spanGaps: true, points: { show: true, size: 6 } }]);
  for (const [id, key, color] of [["lr", "lr", "#6a4fc9"], ["tps", "tokens_per_s", "#2e9d57"], ["mfu", "mfu", "#c94040"]]) {
    const s = series(state.train, key);
    plot(id, [s.map((p) => p[0]), s.map((p) => p[1])], [{ label: key, stroke: color }]);
  }
  // Task accuracy (train --eval-task): acc_norm (solid) and acc (dashed) of each task file over steps.
  const names = [...new Set(state.tasks.map((r) => r.task))].sort();
  const tsteps = [...new Set(state.tasks.map((r) => r.step))].sort((a, b) => a - b);
  const palette = ["#2a8be0", "#e0702a", "#2e9d57", "#c94040", "#6a4fc9", "#8a6d3b"];
  const data = [tsteps], lines = [];
  names.forEach((n, i) => {
    const at = new Map(state.tasks.filter((r) => r.task === n).map((r) => [r.step, r]));
    for (const [key, dash] of [["acc_norm", undefined], ["acc", [4, 4]]]) {
      data.push(tsteps.map((s) => at.get(s)?.[key] ?? null));
      lines.push({ label: `${n} ${key}`, stroke: palette[i % palette.length], dash, spanGaps: true, points: { show: true, size: 5 } });
    }
  });
  if (names.length) plot("task", data, lines);
  else { const el = $("#chart-task"); el.dataset.points = "0"; el.querySelector("h3").dataset.empty = " (none: train --eval-task FILE)"; }
  // MoE: expert load over steps — each expert's fraction of routed tokens, averaged over the MoE layers (1/E is balanced).
  const moe = state.train.filter((r) => r.moe && r.moe.layers && r.moe.layers.length);
  const experts = moe.length ? moe[0].moe.layers[0].load.length : 0;
  const load = (r, e) => r.moe.layers.reduce((a, l) => a + l.load[e], 0) / r.moe.layers.length;
  plot("moe", [moe.map((r) => r.step), ...Array.from({ length: experts }, (_, e) => moe.map((r) => load(r, e)))],
    Array.from({ length: experts }, (_, e) => ({ label: "expert " + e, stroke: `hsl(${Math.round(360 * e / Math.max(1, experts))}, 65%, 45%)` })));
}

function plot(id, data, lines) {
  const el = $("#chart-" + id);
  el.dataset.points = String(data[0].length);
  el.querySelector("h3").dataset.empty = data[0].length ? "" : id === "mfu" ? " (no data: MFU is null on CPU)" : id === "moe" ? " (no data: dense model)" : " (no data yet)";
  const labels = lines.map((l) => l.label).join("\n");
  if (state.charts[id] && state.charts[id].labels !== labels) { state.charts[id].destroy(); delete state.charts[id]; }   // a new series (task)
  if (state.charts[id]) { state.charts[id].setData(data); return; }
  const opts = {
    width: Math.max(300, el.clientWidth - 16), height: 220,
    scales: { x: { time: false }, ...(id === "task" ? { y: { range: [0, 1] } } : {}) },   // accuracy: the whole 0..1
    axes: [{ label: "step" }, { size: 64 }],
    series: [{ label: "step" }, ...lines.map((l) => ({ width: 1.5, ...l }))],
  };
  state.charts[id] = new uPlot(opts, data, el);
  state.charts[id].labels = labels;
}
function resize(c) { const el = c.root.parentElement; if (el && el.clientWidth) c.setSize({ width: Math.max(300, el.clientWidth - 16), height: 220 }); }
window.addEventListener("resize", () => Object.values(state.charts).forEach(resize));

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("#api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function generate() {
  const out = $("#output");
  out.textContent = $("#prompt").value;
  $("#generate").disabled = true; $("#stop").disabled = false;
  state.abort = new AbortController();
  const started = performance.now();
  let tokens = 0;
  try {
    const r = await fetch("/v1/completions", {
      method: "POST", headers: headers(), signal: state.abort.signal,
      body: JSON.stringify({ prompt: $("#prompt").value, stream: true, temperature: +$("#temperature").value, top_p: +$("#top-p").value, max_tokens: +$("#max-tokens").value }),
    });
    if (!r.ok) { const e = await r.json().catch(() => ({})); throw new Error(e.error?.message || r.statusText); }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + 2);
        if (!ev.startsWith("data: ")) continue;
        const data = ev.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const t = chunk.choices[0].text;
        if (t) { out.textContent += t; tokens++; }
        if (chunk.choices[0].finish_reason) $("#gen-stats").textContent = `finish: ${chunk.choices[0].finish_reason} · ${((performance.now() - started) / 1000).toFixed(2)} s`;
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") $("#gen-stats").textContent = "error: " + e.message;
  } finally {
    $("#generate").disabled = false; $("#stop").disabled = true;
  }
}
$("#generate").addEventListener("click", generate);
$("#stop").addEventListener("click", () => state.abort?.abort());

async function search() {
  const list = $("#search-results");
  list.innerHTML = "";
  const r = await fetch("/v1/search", { method: "POST", headers: headers(), body: JSON.stringify({ query: $("#search-query").value, mode: "hybrid", top_k: 5 }) });
  const j = await r.json();
  if (!r.ok) { list.innerHTML = `<li>${esc(j.error?.message || r.statusText)}</li>`; return; }
  for (const h of j.data) {
    // Hybrid (BM25 + embeddings, reciprocal-rank fusion); the snippet comes HTML-escaped with <mark> around matched terms.
    const fields = Object.entries(h.fields).map(([k, v]) => `${esc(k)}: ${esc(v)}`).join(" · ");
    const s = h.scores, kw = s.keyword == null ? "–" : s.keyword.toFixed(2), sem = s.semantic == null ? "–" : s.semantic.toFixed(3);
    list.insertAdjacentHTML("beforeend", `<li><div class="meta">${esc(h.id)} · score ${h.score.toFixed(3)} (keyword ${kw}, semantic ${sem}) · ${fields}</div>${h.snippet}</li>`);
  }
}
$("#search-button").addEventListener("click", search);
$("#search-query").addEventListener("keydown", (e) => { if (e.key === "Enter") search(); });

$("#api-key").addEventListener("change", () => loadInfo().then(loadRuns).catch(() => {}));

(async () => {
  await loadInfo().catch(() => {});
  await loadRuns().catch(() => {});
  setInterval(() => { loadRuns().catch(() => {}); refreshRun().catch(() => {}); }, 2000);
})();
