// wrun dashboard: plain JavaScript, no build step. It reads the public JSON
// API (docs/api.md) with the cookie the login page set, and live updates
// come from server-sent events (/v1/events). Nothing a user or a job wrote
// (job, operator and savepoint names, error messages) is ever parsed as
// HTML: every text goes through textContent.
"use strict";
(() => {
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  let cleanups = [];
  // Digest → the name@versions that name it, from the module store.
  let moduleNames = {};

  // ---- small helpers -------------------------------------------------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function sv(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }
  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      // Through the CSSOM: the page's Content-Security-Policy refuses
      // style attributes.
      else if (k === "style") e.style.cssText = String(v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function append(e, kids) {
    for (const k of kids.flat()) {
      if (k === undefined || k === null || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  function setText(e, t) { if (e.textContent !== t) e.textContent = t; }

  class ApiError extends Error {}
  async function api(path, opts = {}) {
    const headers = Object.assign({ "x-wrun-ui": "1" }, opts.headers || {});
    const r = await fetch(path, Object.assign({}, opts, { headers, credentials: "same-origin" }));
    if (r.status === 401) { location.href = "/ui/login"; throw new ApiError("signed out"); }
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!r.ok) {
      const msg = body && body.error ? [body.error].concat(body.causes || []).join("\n  caused by: ") : `HTTP ${r.status}`;
      throw new ApiError(msg);
    }
    return body;
  }
  const post = (path, body) => api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}) });

  function fmtNum(n) {
    if (n === undefined || n === null) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return Number.isInteger(n) ? String(n) : n.toFixed(1);
  }
  const fmtRate = (n) => (n === undefined || n === null ? "–" : fmtNum(n) + "/s");
  function fmtBytes(b) {
    if (b === undefined || b === null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : String(b)) + " " + u[i];
  }
  function fmtDur(ms) {
    if (ms === undefined || ms === null) return "–";
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }
  const fmtAgo = (ms) => (ms ? fmtDur(Date.now() - ms) + " ago" : "–");
  const fmtTime = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "–");
  // An event-time watermark: none yet, the end of the input (the largest
  // i64, past any date), or a time.
  const fmtWatermark = (ms) => (ms === null || ms === undefined ? "none yet" : ms >= 8.64e15 ? "end of input" : fmtTime(ms));
  const pct = (x) => (x === undefined || x === null ? "–" : Math.round(x * 100) + "%");
  const badge = (state) => el("span", { class: "state " + state }, state);

  function onCleanup(f) { cleanups.push(f); }
  function stream(query, handlers) {
    const es = new EventSource("/v1/events" + query);
    for (const [name, f] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => { try { f(JSON.parse(ev.data)); } catch (e) { showLive("update failed: " + e.message); } });
    }
    es.onopen = () => showLive("live");
    es.onerror = () => showLive("reconnecting…");
    onCleanup(() => es.close());
  }
  function showLive(t) { setText(live, t); }

  // A button that runs `f`, shows its progress in `out`, and re-enables.
  function action(label, cls, out, f) {
    const b = el("button", { type: "button", class: cls }, label);
    b.addEventListener("click", async () => {
      b.disabled = true;
      try { await f((t) => setText(out, t)); } catch (e) { out.className = "progress error"; setText(out, e.message); }
      finally { b.disabled = false; }
    });
    return b;
  }

  // Polls an asynchronous request until it ends; reports each status.
  async function follow(accepted, say) {
    const id = accepted["request-id"];
    for (;;) {
      const r = await api("/v1/requests/" + encodeURIComponent(id));
      if (r.status === "completed") return r;
      if (r.status === "failed") throw new ApiError(r.error || "failed");
      say(`${r.kind} ${id}: ${r.status}…`);
      await new Promise((ok) => setTimeout(ok, 250));
    }
  }

  // ---- routing ---------------------------------------------------------

  function route() {
    for (const f of cleanups) f();
    cleanups = [];
    clear(main);
    showLive("");
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const page = parts[0] || "jobs";
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    if (page === "jobs" && parts[1]) jobPage(parts[1]);
    else if (page === "savepoints") savepointsPage();
    else if (page === "modules") modulesPage();
    else jobsPage();
    main.focus({ preventScroll: true });
  }
  window.addEventListener("hashchange", route);

  // ---- jobs ------------------------------------------------------------

  function jobsPage() {
    const body = el("tbody");
    const table = el("table", { id: "jobs" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Job"), el("th", {}, "State"), el("th", {}, "Node"), el("th", { class: "num" }, "Uptime"),
        el("th", { class: "num" }, "Parallelism"), el("th", { class: "num" }, "Restarts"),
        el("th", { class: "num" }, "Last checkpoint"), el("th", { class: "num" }, "Throughput"))),
      body);
    const empty = el("p", { class: "muted" }, "No jobs yet. Deploy one below or with `wrun deploy job.toml`.");
    main.append(el("h1", {}, "Jobs"), table, empty, deployForm());
    const rows = new Map();
    stream("", {
      jobs: (d) => {
        empty.hidden = d.jobs.length > 0;
        const seen = new Set();
        for (const j of d.jobs) {
          seen.add(j.name);
          let r = rows.get(j.name);
          if (!r) {
            const link = el("a", { href: "#/jobs/" + encodeURIComponent(j.name) }, j.name);
            r = { tr: el("tr", { "data-job": j.name }), cells: [] };
            r.cells = Array.from({ length: 8 }, (_, i) => el("td", { class: i >= 3 ? "num" : "" }));
            r.cells[0].append(link);
            r.tr.append(...r.cells);
            body.append(r.tr);
            rows.set(j.name, r);
          }
          const sum = (d.summaries || {})[j.name] || {};
          clear(r.cells[1]); r.cells[1].append(badge(j.state));
          setText(r.cells[2], j.node || (j.waiting ? "(waiting)" : "–"));
          setText(r.cells[3], j["started-at-ms"] ? fmtDur(Date.now() - j["started-at-ms"]) : "–");
          setText(r.cells[4], sum.parallelism ? String(sum.parallelism) : "–");
          setText(r.cells[5], String(j.restarts));
          const last = (j.checkpoints || []).slice(-1)[0];
          setText(r.cells[6], last ? `#${last.id}, ${fmtAgo(last["triggered-at-ms"] + last["duration-ms"])}` : "–");
          setText(r.cells[7], fmtRate(sum["records-per-s"]));
        }
        for (const [name, r] of rows) if (!seen.has(name)) { r.tr.remove(); rows.delete(name); }
      },
      error: (d) => showLive(d.error),
    });
  }

  function deployForm() {
    const text = el("textarea", { id: "manifest", "aria-label": "job.toml", spellcheck: "false", placeholder: 'version = 1\nname = "my-job"\n…' });
    const par = el("input", { type: "number", min: "1", id: "parallelism", "aria-label": "Default parallelism" });
    const from = el("input", { type: "text", id: "from-savepoint", "aria-label": "From savepoint" });
    const out = el("p", { class: "progress", role: "status" });
    const go = action("Deploy", "primary", out, async (say) => {
      out.className = "progress";
      const req = { manifest: text.value };
      if (par.value) req.parallelism = Number(par.value);
      if (from.value.trim()) req["from-savepoint"] = from.value.trim();
      say("deploying…");
      const st = await post("/v1/jobs", req);
      say(`deployed '${st.name}'`);
      location.hash = "#/jobs/" + encodeURIComponent(st.name);
    });
    return el("details", { class: "panel" },
      el("summary", {}, "Deploy a job"),
      el("p", { class: "muted" }, "Paste a job.toml whose operators name modules already pushed (name@version or a blake3: digest; see Modules). A component given as a path needs `wrun deploy`, which uploads it."),
      text,
      el("p", {}, el("label", { for: "parallelism" }, "Default parallelism "), par, " ",
        el("label", { for: "from-savepoint" }, "From savepoint "), from),
      el("div", { class: "actions" }, go), out);
  }

  // ---- one job -----------------------------------------------------------

  function jobPage(name) {
    const title = el("h1", {}, name, " ", el("span", { id: "job-state" }));
    const cards = el("div", { class: "cards" });
    const card = (label) => { const v = el("div", { class: "value num" }, "–"); cards.append(el("div", { class: "card" }, el("div", { class: "label" }, label), v)); return v; };
    const c = { uptime: card("Uptime"), restarts: card("Restarts"), node: card("Node"), last: card("Last checkpoint"), rate: card("Throughput (in)") };
    const out = el("p", { class: "progress", role: "status", id: "action-progress" });
    const newPar = el("input", { id: "rescale-parallelism", type: "number", min: "1", max: "32768", class: "narrow", title: "the default parallelism of operators that do not set their own" });
    const actions = el("div", { class: "actions" },
      action("Take a savepoint", "primary", out, async (say) => {
        out.className = "progress";
        say("savepoint requested…");
        const r = await follow(await post(`/v1/jobs/${encodeURIComponent(name)}/savepoints`, {}), say);
        say(`savepoint ${r.savepoint ? r.savepoint.id : ""} taken at checkpoint ${r.checkpoint}`);
        loadSavepoints();
      }),
      action("Stop with a savepoint", "", out, async (say) => {
        if (!confirm(`Stop job '${name}' at a savepoint?`)) return;
        out.className = "progress";
        say("stopping at a savepoint…");
        const r = await follow(await post(`/v1/jobs/${encodeURIComponent(name)}/savepoints`, { stop: "suspend" }), say);
        say(`stopped at savepoint ${r.savepoint ? r.savepoint.id : ""}; resume it with wrun deploy job.toml --from-savepoint ${r.savepoint ? r.savepoint.id : "ID"}`);
        loadSavepoints();
      }),
      el("label", { for: "rescale-parallelism" }, "New parallelism"),
      newPar,
      action("Rescale", "", out, async (say) => {
        const n = Number(newPar.value);
        if (!Number.isInteger(n) || n < 1) { out.className = "progress error"; say("give the new parallelism, a whole number from 1"); return; }
        if (!confirm(`Stop job '${name}' at a savepoint and run it again from there at parallelism ${n}?`)) return;
        out.className = "progress";
        say(`rescaling to ${n}: stopping at a savepoint…`);
        const r = await follow(await post(`/v1/jobs/${encodeURIComponent(name)}/rescale`, { parallelism: n }), say);
        say(`rescaled: stopped at savepoint ${r.savepoint ? r.savepoint.id : ""} and running again from it at parallelism ${n}`);
        // The new run has other subtasks: draw its graph afresh.
        graph = null; metrics = null; selected = null; history.length = 0;
        loadSavepoints();
      }),
      action("Cancel", "danger", out, async (say) => {
        if (!confirm(`Cancel job '${name}' without a savepoint?`)) return;
        await post(`/v1/jobs/${encodeURIComponent(name)}/cancel`);
        say("cancelled");
      }));
    const failure = el("div", { id: "failure" });
    const graphWrap = el("div", { class: "graph-wrap", id: "graph" }, el("p", { class: "muted", style: "padding:1rem" }, "Waiting for the job to start…"));
    const side = el("aside", { class: "panel", id: "vertex", "aria-live": "polite" }, el("p", { class: "muted" }, "Select a vertex (click, or Tab and Enter) for its subtasks, module and charts."));
    const legend = el("div", { class: "legend", id: "graph-legend" },
      el("span", {}, el("span", { class: "swatch busy" }), "busy"),
      el("span", {}, el("span", { class: "swatch bp" }), "backpressured (waiting on a full queue downstream)"),
      el("span", {}, el("span", { class: "swatch idle" }), "idle (waiting for input)"),
      el("span", {}, "bars: the busiest subtask of each vertex, last second"));
    const cps = el("div", { id: "checkpoints" });
    const sps = el("div", { id: "savepoints" });
    main.append(title, cards, actions, out, failure,
      el("h2", {}, "Graph"), legend, el("div", { class: "split" }, graphWrap, side),
      el("h2", {}, "Checkpoints"), cps, el("h2", {}, "Savepoints of this job"), sps);

    let graph = null, view = null, selected = null, status = null, metrics = null;
    const history = [];
    const loadGraph = async () => {
      if (graph) return;
      try {
        graph = await api(`/v1/jobs/${encodeURIComponent(name)}/graph`);
        const ops = graph.vertices.filter((v) => v.kind === "operator").map((v) => v.parallelism);
        if (ops.length) newPar.placeholder = "now " + Math.max(...ops);
        api("/v1/modules").then((d) => {
          moduleNames = Object.fromEntries(d.modules.map((m) => [m.digest, m.names || []]));
          renderSide();
        }).catch(() => {});
        const m = await api(`/v1/jobs/${encodeURIComponent(name)}/metrics`);
        history.push(...m.history);
        metrics = m;
        view = drawGraph(graphWrap, graph, (i) => { selected = i; renderSide(); view.select(i); });
        view.update(metrics, history);
      } catch (e) { graph = null; }
    };
    function renderSide() {
      if (selected === null || !graph) return;
      vertexPanel(side, graph, selected, metrics, history, status);
    }
    function loadSavepoints() {
      api("/v1/savepoints").then((d) => renderSavepoints(sps, d.savepoints.filter((s) => s.job === name), loadSavepoints)).catch((e) => setText(sps, e.message));
    }
    loadSavepoints();
    stream("?job=" + encodeURIComponent(name), {
      job: (d) => {
        status = d.status;
        const t = document.getElementById("job-state");
        clear(t); t.append(badge(status.state));
        setText(c.uptime, status["started-at-ms"] ? fmtDur(Date.now() - status["started-at-ms"]) : "–");
        setText(c.restarts, String(status.restarts));
        setText(c.node, status.node || "this wrun");
        const last = (status.checkpoints || []).slice(-1)[0];
        setText(c.last, last ? `#${last.id}, ${fmtAgo(last["triggered-at-ms"] + last["duration-ms"])}` : "none yet");
        renderFailure(failure, status);
        renderCheckpoints(cps, status.checkpoints || [], status["failed-checkpoints"] || []);
        if (d.metrics) {
          metrics = d.metrics;
          for (const s of d.metrics.history) if (!history.length || s["at-ms"] > history[history.length - 1]["at-ms"]) history.push(s);
          while (history.length > 600) history.shift();
          const latest = history[history.length - 1];
          if (latest && graph) {
            const ins = graph.vertices.map((v, i) => (v.kind === "source" ? latest.vertices[i]["out-per-s"] : 0)).reduce((a, b) => a + b, 0);
            setText(c.rate, fmtRate(ins));
          }
          if (!graph) loadGraph(); else view.update(metrics, history);
          renderSide();
        }
      },
      error: (d) => showLive(d.error),
    });
  }

  function renderFailure(box, st) {
    clear(box);
    if (!st.error) return;
    const lines = String(st.error).split("\n");
    box.append(el("div", { class: "panel" },
      el("strong", {}, st.state === "restarting" ? "Restarting after a failure" : "Last failure"),
      el("dl", { class: "kv" },
        el("dt", {}, "cause"), el("dd", { class: "error" }, lines.join("\n")),
        st["error-domain"] ? [el("dt", {}, "whose"), el("dd", {}, st["error-domain"] + (st.retryable ? " (a restart can help)" : " (a restart cannot help)"))] : null,
        st["next-attempt-at-ms"] ? [el("dt", {}, "next attempt"), el("dd", {}, fmtTime(st["next-attempt-at-ms"]))] : null,
        el("dt", {}, "restarts"), el("dd", {}, String(st.restarts)))));
  }

  // ---- the graph ---------------------------------------------------------

  const W = 210, H = 92;
  function drawGraph(wrap, graph, onSelect) {
    clear(wrap);
    const old = document.getElementById("fit-graph");
    if (old) old.remove();
    const g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 80, marginx: 16, marginy: 16 });
    g.setDefaultEdgeLabel(() => ({}));
    graph.vertices.forEach((v, i) => g.setNode(String(i), { width: W, height: H }));
    graph.edges.forEach((e, i) => g.setEdge(String(e.from), String(e.to), { label: e.partition, width: 60, height: 14, labelpos: "c" }, "e" + i));
    dagre.layout(g);
    const gg = g.graph();
    const gw = Math.ceil(gg.width), gh = Math.ceil(gg.height);
    const svg = sv("svg", { class: "graph", viewBox: `0 0 ${gw} ${gh}`, role: "group", "aria-label": "job graph" });
    // At full size (the frame scrolls), or fitted to the frame: an
    // overview of a large graph.
    const size = (fit) => {
      // Fitted: scaled down (never up) until both sides fit the frame,
      // whose height is capped by the style sheet.
      const maxH = parseFloat(getComputedStyle(wrap).maxHeight) || window.innerHeight * 0.7;
      const k = fit ? Math.min(1, (wrap.clientWidth - 2) / gw, (maxH - 2) / gh) : 1;
      svg.style.width = Math.floor(gw * k) + "px";
      svg.style.height = Math.floor(gh * k) + "px";
      fitButton.setAttribute("aria-pressed", String(fit));
      setText(fitButton, fit ? "Full size" : "Fit to the frame");
    };
    const fitButton = el("button", { type: "button", id: "fit-graph" });
    let fitted = false;
    fitButton.addEventListener("click", () => { fitted = !fitted; size(fitted); });
    size(false);
    svg.append(sv("defs", {},
      sv("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        sv("rect", { width: 6, height: 6, fill: "#fff" }), sv("rect", { width: 3, height: 6, fill: "#d55e00" })),
      sv("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        sv("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#888" }))));
    graph.edges.forEach((e, i) => {
      const ed = g.edge(String(e.from), String(e.to), "e" + i);
      const d = ed.points.map((p, k) => (k ? "L" : "M") + p.x.toFixed(1) + " " + p.y.toFixed(1)).join(" ");
      svg.append(sv("path", { class: "edge", d, "marker-end": "url(#arrow)" }));
      const label = e.partition + (e.output ? ` (${e.output})` : "");
      svg.append(sv("text", { class: "edge-label", x: ed.x, y: ed.y, "text-anchor": "middle" }, label));
    });
    const nodes = graph.vertices.map((v, i) => {
      const n = g.node(String(i));
      const x = n.x - W / 2, y = n.y - H / 2;
      const kind = v.kind === "operator" ? "operator" : `${v.kind} · ${v.connector}`;
      const rates = sv("text", { class: "rates", x: x + 8, y: y + 50 }, "in –  out –");
      const share = sv("text", { class: "sub", x: x + 8, y: y + 66 }, "");
      const busy = sv("rect", { class: "busy", x: x + 8, y: y + 74, width: 0, height: 10 });
      const bp = sv("rect", { class: "bp", x: x + 8, y: y + 74, width: 0, height: 10 });
      const idle = sv("rect", { class: "idlebar", x: x + 8, y: y + 74, width: W - 16, height: 10 });
      const node = sv("g", { class: "vertex", tabindex: 0, role: "button", "data-vertex": v.name, "aria-label": `${v.name}, ${kind}, parallelism ${v.parallelism}` },
        sv("rect", { class: "box", x, y, width: W, height: H, rx: 6 }),
        sv("text", { class: "name", x: x + 8, y: y + 18 }, clip(v.name, 26)),
        sv("text", { class: "sub", x: x + 8, y: y + 34 }, `${kind} · ×${v.parallelism}`),
        rates, share, idle, busy, bp);
      node.append(sv("title", {}, v.name));
      node.addEventListener("click", () => onSelect(i));
      node.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onSelect(i); } });
      svg.append(node);
      return { node, rates, busy, bp, x, share };
    });
    wrap.append(svg);
    // Beside the legend, outside the graph and panel grid.
    (document.getElementById("graph-legend") || wrap.parentNode).append(fitButton);
    return {
      select(i) { nodes.forEach((n, k) => n.node.classList.toggle("selected", k === i)); },
      update(metrics, history) {
        const latest = history[history.length - 1];
        graph.vertices.forEach((v, i) => {
          const n = nodes[i];
          const m = metrics.vertices[i];
          const s = latest ? latest.vertices[i] : null;
          const counts = `in ${fmtNum(m["records-in"])} · out ${fmtNum(m["records-out"])}`;
          n.rates.textContent = s ? `${fmtRate(s["in-per-s"])} in · ${fmtRate(s["out-per-s"])} out` : counts;
          n.rates.setAttribute("data-counts", counts);
          const busy = s ? s.busy : 0, bp = s ? s.backpressured : 0;
          const w = W - 16;
          n.busy.setAttribute("width", (busy * w).toFixed(1));
          n.bp.setAttribute("x", (n.x + 8 + busy * w).toFixed(1));
          n.bp.setAttribute("width", (bp * w).toFixed(1));
          n.share.textContent = s ? `busy ${pct(busy)} · backpressured ${pct(bp)}` : "";
        });
      },
    };
  }
  const clip = (t, n) => (t.length > n ? t.slice(0, n - 1) + "…" : t);

  function shareBar(s) {
    return el("span", { class: "bar", title: `busy ${pct(s.busy)}, backpressured ${pct(s.backpressured)}, idle ${pct(s.idle)}` },
      el("span", { class: "b", style: `width:${(s.busy * 100).toFixed(1)}%` }),
      el("span", { class: "p", style: `width:${(s.backpressured * 100).toFixed(1)}%` }),
      el("span", { class: "i", style: `width:${(s.idle * 100).toFixed(1)}%` }));
  }

  function vertexPanel(side, graph, i, metrics, history, status) {
    const v = graph.vertices[i];
    const m = metrics ? metrics.vertices[i] : null;
    clear(side);
    side.append(el("h2", {}, v.name));
    const kv = el("dl", { class: "kv" },
      el("dt", {}, "kind"), el("dd", {}, v.kind + (v.connector ? ` (${v.connector})` : "")),
      v.uid ? [el("dt", {}, "uid"), el("dd", { class: "mono" }, v.uid)] : null,
      el("dt", {}, "parallelism"), el("dd", {}, String(v.parallelism)),
      m ? [el("dt", {}, "records"), el("dd", { class: "num" }, `in ${fmtNum(m["records-in"])}, out ${fmtNum(m["records-out"])}`)] : null);
    if (v.module) {
      const names = moduleNames[v.module.digest];
      kv.append(el("dt", {}, "module"), el("dd", { class: "mono" }, names && names.length ? names.join(", ") : v.module.component === v.module.digest ? "(pushed without a name)" : v.module.component),
        el("dt", {}, "digest"), el("dd", { class: "mono" }, v.module.digest),
        el("dt", {}, "world"), el("dd", { class: "mono" }, v.module.world),
        el("dt", {}, "state format"), el("dd", { class: "mono" }, graph["state-formats"][i] || v.module["state-format"] || (metrics ? "(declared once a subtask opens)" : "–")));
      if (v.module.outputs.length) kv.append(el("dt", {}, "named outputs"), el("dd", {}, v.module.outputs.join(", ")));
    }
    side.append(kv);
    if (m && m.subtasks.length) {
      const body = el("tbody");
      for (const s of m.subtasks) {
        body.append(el("tr", { "data-subtask": s.subtask }, el("td", { class: "num" }, String(s.subtask)), el("td", {}, shareBar(s)),
          el("td", { class: "num" }, pct(s.busy)), el("td", { class: "num" }, pct(s.backpressured)),
          el("td", { class: "num" }, v.kind === "source" ? "–" : pct(s["queue-fill"])),
          el("td", { class: "num" }, v.kind === "sink" ? "–" : pct(s["output-fill"]))));
      }
      side.append(el("h3", {}, "Subtasks (last second)"), el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "time"), el("th", { class: "num" }, "busy"), el("th", { class: "num" }, "bp"), el("th", { class: "num", title: "how full its input queue is" }, "in q"), el("th", { class: "num", title: "how full its output is: the fullest queue it sends to" }, "out q"))), body));
    }
    if (m && m.lag.length) {
      side.append(el("h3", {}, "Lag per split"), el("table", {}, el("tbody", {},
        m.lag.map((l) => el("tr", {}, el("td", { class: "mono" }, l.split), el("td", { class: "num" }, fmtNum(l.records) + " records"))))));
    }
    const splits = ((status && status["split-watermarks"]) || []).filter((w) => w.vertex === v.name);
    if (splits.length) {
      side.append(el("h3", {}, "Watermark per split"), el("table", {}, el("tbody", {},
        splits.map((w) => el("tr", {}, el("td", { class: "mono" }, w.split), el("td", { class: "num" }, fmtWatermark(w["watermark-ms"])))))));
    }
    const wms = ((status && status.watermarks) || []).filter((w) => w.vertex === v.name);
    if (wms.length) {
      side.append(el("h3", {}, "Watermarks"), el("table", {}, el("tbody", {},
        wms.map((w) => el("tr", {}, el("td", { class: "num" }, String(w.subtask)), el("td", { class: "num" }, w.idle ? "idle" : fmtWatermark(w["watermark-ms"])))))));
    }
    if (history.length > 1) {
      side.append(el("h3", {}, "Records per second (last minutes)"),
        lineChart(history.map((h) => h["at-ms"]), [history.map((h) => h.vertices[i]["in-per-s"]), history.map((h) => h.vertices[i]["out-per-s"])], ["in", "out"]),
        el("h3", {}, "Busy and backpressured (busiest subtask)"),
        lineChart(history.map((h) => h["at-ms"]), [history.map((h) => h.vertices[i].busy), history.map((h) => h.vertices[i].backpressured)], ["busy", "backpressured"], 1));
    }
  }

  function lineChart(xs, series, names, fixedMax) {
    const w = 320, h = 90, pad = 22;
    const max = fixedMax || Math.max(1, ...series.flat());
    const x0 = xs[0], x1 = xs[xs.length - 1] || x0 + 1;
    const px = (x) => pad + ((x - x0) / Math.max(1, x1 - x0)) * (w - pad - 4);
    const py = (y) => h - 14 - (y / max) * (h - 22);
    const svg = sv("svg", { class: "chart", width: w, height: h, role: "img", "aria-label": names.join(" and ") + " over the last minutes" });
    series.forEach((ys, k) => {
      const d = ys.map((y, j) => (j ? "L" : "M") + px(xs[j]).toFixed(1) + " " + py(y || 0).toFixed(1)).join(" ");
      svg.append(sv("path", { class: k ? "l2" : "l1", d }));
    });
    svg.append(sv("text", { x: 2, y: 10 }, fixedMax ? "100%" : fmtNum(max)));
    svg.append(sv("text", { x: 2, y: h - 2 }, `${names[0]} (solid)` + (names[1] ? `, ${names[1]} (dashed)` : "") + `; ${fmtDur(x1 - x0)}`));
    return svg;
  }

  function renderCheckpoints(box, cps, failed) {
    clear(box);
    if (failed.length) {
      const body = el("tbody");
      for (const f of failed.slice().reverse()) {
        body.append(el("tr", { "data-failed-checkpoint": f.id }, el("td", { class: "num" }, "#" + f.id), el("td", {}, fmtTime(f["failed-at-ms"])), el("td", { class: "error" }, f.reason)));
      }
      box.append(el("h3", {}, `Failed (${failed.length} of the last)`), el("table", {},
        el("thead", {}, el("tr", {}, el("th", { class: "num" }, "ID"), el("th", {}, "failed"), el("th", {}, "why"))), body));
    }
    if (!cps.length) { box.append(el("p", { class: "muted" }, "No checkpoint completed yet in this run.")); return; }
    const w = 520, h = 110, bw = Math.min(40, (w - 40) / cps.length - 6);
    const maxD = Math.max(1, ...cps.map((c) => c["duration-ms"]));
    const maxB = Math.max(1, ...cps.map((c) => c["full-bytes"]));
    const chart = sv("svg", { class: "chart", width: w, height: h, role: "img", "aria-label": "checkpoint duration and size" });
    cps.forEach((c, k) => {
      const x = 30 + k * (bw + 6);
      const dh = (c["duration-ms"] / maxD) * (h - 30);
      const bh = (c["new-bytes"] / maxB) * (h - 30);
      chart.append(sv("rect", { class: "col", x, y: h - 16 - dh, width: bw / 2, height: dh }, sv("title", {}, `#${c.id}: ${c["duration-ms"]} ms`)));
      chart.append(sv("rect", { class: "col2", x: x + bw / 2, y: h - 16 - bh, width: bw / 2, height: bh }, sv("title", {}, `#${c.id}: ${fmtBytes(c["new-bytes"])} new of ${fmtBytes(c["full-bytes"])}`)));
      chart.append(sv("text", { x, y: h - 4 }, "#" + c.id));
    });
    chart.append(sv("text", { x: 2, y: 10 }, `duration (blue, max ${maxD} ms) · new bytes (orange, of max ${fmtBytes(maxB)} full)`));
    const body = el("tbody");
    for (const c of cps.slice().reverse()) {
      body.append(el("tr", {}, el("td", { class: "num" }, "#" + c.id), el("td", {}, fmtTime(c["triggered-at-ms"])),
        el("td", { class: "num" }, c["duration-ms"] + " ms"), el("td", { class: "num" }, fmtBytes(c["full-bytes"])), el("td", { class: "num" }, fmtBytes(c["new-bytes"]))));
    }
    box.append(chart, el("table", {}, el("thead", {}, el("tr", {}, el("th", { class: "num" }, "ID"), el("th", {}, "triggered"),
      el("th", { class: "num" }, "duration"), el("th", { class: "num" }, "size"), el("th", { class: "num" }, "incremental"))), body),
      el("p", { class: "muted" }, "Failed checkpoints are listed above this chart when there are any, and counted in wrun_checkpoints_failed_total."));
  }

  // ---- savepoints ----------------------------------------------------------

  function renderSavepoints(box, sps, reload) {
    clear(box);
    if (!sps.length) { box.append(el("p", { class: "muted" }, "No savepoints.")); return; }
    const out = el("p", { class: "progress", role: "status" });
    const body = el("tbody");
    for (const s of sps.slice().sort((a, b) => b["created-at-ms"] - a["created-at-ms"])) {
      body.append(el("tr", { "data-savepoint": s.id },
        el("td", { class: "mono" }, s.name || s.id), el("td", {}, s.job), el("td", { class: "num" }, "#" + s.checkpoint),
        el("td", {}, fmtTime(s["created-at-ms"])), el("td", { class: "num" }, fmtBytes(s.bytes)),
        el("td", {}, s.stopped ? "stopped the job" : "job went on"),
        el("td", { class: "mono" }, `wrun deploy job.toml --from-savepoint ${s.name || s.id}`),
        el("td", {}, action("Dispose", "danger", out, async (say) => {
          if (!confirm(`Dispose of savepoint ${s.name || s.id}? Its state is deleted.`)) return;
          const r = await api("/v1/savepoints/" + encodeURIComponent(s.id), { method: "DELETE" });
          say(`disposed of ${r.disposed}`);
          reload();
        }))));
    }
    box.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "savepoint"), el("th", {}, "resumes job"), el("th", { class: "num" }, "checkpoint"),
      el("th", {}, "taken"), el("th", { class: "num" }, "size"), el("th", {}, ""), el("th", {}, "to resume"), el("th", {}, ""))), body), out);
  }

  function savepointsPage() {
    const box = el("div", { id: "savepoints" });
    main.append(el("h1", {}, "Savepoints"), box);
    const load = () => api("/v1/savepoints").then((d) => renderSavepoints(box, d.savepoints, load)).catch((e) => setText(box, e.message));
    load();
  }

  // ---- modules -------------------------------------------------------------

  function modulesPage() {
    const box = el("div", { id: "modules" });
    const file = el("input", { type: "file", accept: ".wasm", id: "module-file" });
    const name = el("input", { type: "text", id: "module-name", placeholder: "name" });
    const version = el("input", { type: "text", id: "module-version", placeholder: "version" });
    const out = el("p", { class: "progress", role: "status" });
    const upload = action("Upload", "primary", out, async (say) => {
      out.className = "progress";
      const f = file.files[0];
      if (!f) throw new ApiError("choose a .wasm component first");
      const q = name.value && version.value ? `?name=${encodeURIComponent(name.value)}&version=${encodeURIComponent(version.value)}` : "";
      say("uploading, validating and compiling…");
      const m = await api("/v1/modules" + q, { method: "POST", headers: { "content-type": "application/wasm" }, body: await f.arrayBuffer() });
      say(`pushed ${m.digest}`);
      load();
    });
    main.append(el("h1", {}, "Modules"), box, el("h2", {}, "Upload a component"),
      el("div", { class: "panel" }, el("p", {}, el("label", { for: "module-file" }, "Component "), file, " ",
        el("label", { for: "module-name" }, "as "), name, " @ ", version), upload, out));
    // The state format a module declares is known once an operator runs
    // it: gathered from the running jobs' graphs.
    const declared = async () => {
      const out = {};
      const jobs = (await api("/v1/jobs")).jobs.filter((j) => j.state === "running" && !j.node);
      for (const j of jobs) {
        const g = await api(`/v1/jobs/${encodeURIComponent(j.name)}/graph`).catch(() => null);
        if (!g) continue;
        g.vertices.forEach((v, i) => {
          const f = g["state-formats"][i];
          if (v.module && f) (out[v.module.digest] = out[v.module.digest] || new Set()).add(f);
        });
      }
      return out;
    };
    const load = () => Promise.all([api("/v1/modules"), declared().catch(() => ({}))]).then(([d, formats]) => {
      clear(box);
      if (!d.modules.length) { box.append(el("p", { class: "muted" }, "No modules pushed yet.")); return; }
      const body = el("tbody");
      for (const m of d.modules) {
        // Declared on upload (0.2), else as the running jobs' operators
        // declared it.
        const f = m["state-format"] ? new Set([m["state-format"]]) : formats[m.digest];
        body.append(el("tr", { "data-module": m.digest }, el("td", {}, (m.names || []).join(", ") || "–"), el("td", { class: "mono", title: m.digest }, m.digest.slice(0, 19) + "…"),
          el("td", { class: "mono" }, m.world), el("td", {}, m.stateful ? "keyed state" : "stateless"),
          el("td", { class: "mono" }, f ? [...f].join(", ") : "–"),
          el("td", {}, (m.outputs || []).join(", ") || "–"), el("td", { class: "num" }, fmtBytes(m.size)), el("td", {}, fmtTime(m["pushed-at-ms"]))));
      }
      box.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "name@version"), el("th", {}, "digest"), el("th", {}, "WIT world"),
        el("th", {}, "state"), el("th", {}, "state format"), el("th", {}, "named outputs"), el("th", { class: "num" }, "size"), el("th", {}, "pushed"))), body),
        el("p", { class: "muted" }, "The state format is what the module declared when it was uploaded (wrun:operator@0.2); for an older module, what the running jobs' operators declared (– while none runs it)."));
    }).catch((e) => setText(box, e.message));
    load();
  }

  route();
})();
