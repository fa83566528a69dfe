// The timeline page of aioprefactor's local API. It reads the JSON routes under /_local/ and
// builds every element with createElement and text nodes: span payloads are untrusted, so no
// data is ever parsed as HTML.
"use strict";

const POLL_MS = 1000;
const TERMINAL = new Set(["complete", "failed", "cancelled", "terminated"]);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (name === "className") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name === "style") Object.assign(node.style, value);
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function statusBadge(status) {
  return el("span", { className: "status status-" + safeClass(status), text: status });
}

function safeClass(value) {
  return String(value).replace(/[^a-z_-]/gi, "");
}

function time(value) {
  return value ? Date.parse(value) : null;
}

function formatDuration(ms) {
  if (ms === null || Number.isNaN(ms)) return "–";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  const minutes = Math.floor(ms / 60000);
  return minutes + " min " + Math.round((ms % 60000) / 1000) + " s";
}

function formatWhen(value) {
  if (!value) return "–";
  return new Date(value).toLocaleString();
}

function runDuration(instance, now) {
  const start = time(instance.started_at);
  if (start === null) return null;
  const end = time(instance.finished_at);
  return (end === null ? now : end) - start;
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    throw new Error("Not signed in: open the link with ?token= that `serve` printed.");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      message = (await response.json()).message || message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response.json();
}

function setLive(text, isError) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.className = isError ? "error" : "muted";
}

function poller(load) {
  let timer = null;
  async function tick() {
    try {
      await load();
      setLive("live · updated " + new Date().toLocaleTimeString(), false);
    } catch (error) {
      setLive(String(error.message || error), true);
    }
    timer = setTimeout(tick, POLL_MS);
  }
  tick();
  return () => clearTimeout(timer);
}

// The list of runs, newest first.
function listView(main) {
  const tbody = el("tbody", { id: "runs" });
  const summary = el("p", { className: "muted", id: "summary" });
  main.replaceChildren(
    el("h1", { text: "Runs" }),
    summary,
    el("table", { className: "runs" },
      el("thead", {}, el("tr", {},
        el("th", { text: "Agent" }), el("th", { text: "Status" }), el("th", { text: "Started" }),
        el("th", { text: "Duration" }), el("th", { text: "Spans" }), el("th", { text: "Instance" }))),
      tbody));
  let seen = null;
  let data = null;
  function render() {
    const now = Date.now();
    const rows = data.instances.map((instance) => {
      const href = "/instances/" + encodeURIComponent(instance.id);
      return el("tr", { "data-instance-id": instance.id, "data-status": instance.status },
        el("td", {}, el("a", { href: href, text: instance.agent_id })),
        el("td", {}, statusBadge(instance.status)),
        el("td", { text: formatWhen(instance.started_at || instance.inserted_at) }),
        el("td", { className: "num", text: formatDuration(runDuration(instance, now)) }),
        el("td", { className: "num", text: String(instance.span_count) }),
        el("td", { className: "muted" }, el("a", { href: href, text: instance.id })));
    });
    tbody.replaceChildren(...rows);
    summary.textContent = data.total === 0
      ? "No runs yet: point an agent at this API and they appear here."
      : data.instances.length + " of " + data.total + " runs, newest first";
  }
  return poller(async () => {
    const next = await getJSON("/_local/instances");
    const live = next.instances.some((instance) => !TERMINAL.has(instance.status));
    if (next.version !== seen || live) {
      data = next;
      seen = next.version;
      render();
    }
  });
}

// Spans in tree order: children follow their parent, siblings by start time.
function spanTree(spans) {
  const ids = new Set(spans.map((span) => span.id));
  const children = new Map();
  for (const span of spans) {
    const parent = span.parent_span_id && ids.has(span.parent_span_id) ? span.parent_span_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(span);
  }
  const ordered = [];
  function visit(parent, depth) {
    const list = (children.get(parent) || []).slice();
    list.sort((a, b) => time(a.started_at) - time(b.started_at));
    for (const span of list) {
      ordered.push({ span: span, depth: depth });
      visit(span.id, depth + 1);
    }
  }
  visit(null, 0);
  return ordered;
}

function pretty(value) {
  if (value === null || value === undefined) return "–";
  return JSON.stringify(value, null, 2);
}

function instanceView(main, instanceId) {
  let seen = null;
  let data = null;
  let selected = null;

  function axisBounds(now) {
    const instance = data.instance;
    let start = time(instance.started_at) ?? time(instance.inserted_at);
    let end = time(instance.finished_at);
    for (const span of data.spans) {
      start = Math.min(start, time(span.started_at));
      end = Math.max(end ?? 0, time(span.finished_at) ?? now);
    }
    if (end === null || end <= start) end = start + 1;
    return [start, end];
  }

  function renderDetails(span) {
    if (!span) return el("div", { className: "details muted", id: "details",
      text: "Click a span to see its payload and result." });
    return el("div", { className: "details", id: "details" },
      el("h2", {}, span.schema_name + " ", statusBadge(span.status)),
      el("div", { className: "muted", text: "span " + span.id }),
      el("h3", { text: "Payload" }),
      el("pre", { id: "payload", text: pretty(span.payload) }),
      el("h3", { text: "Result" }),
      el("pre", { id: "result", text: pretty(span.result_payload) }));
  }

  function render() {
    const now = Date.now();
    const instance = data.instance;
    const [start, end] = axisBounds(now);
    const span = end - start;
    const ticks = [0, 0.25, 0.5, 0.75].map((f) =>
      el("div", { className: "tick", style: { left: f * 100 + "%" }, text: formatDuration(f * span) }));
    const rows = spanTree(data.spans).map(({ span: item, depth }) => {
      const from = time(item.started_at);
      const to = time(item.finished_at) ?? now;
      const left = ((from - start) / span) * 100;
      const width = Math.max(((to - from) / span) * 100, 0.3);
      const label = item.schema_title ? item.schema_name + " · " + item.schema_title : item.schema_name;
      const row = el("div", {
          className: "span-row" + (selected === item.id ? " selected" : ""),
          "data-span-id": item.id, "data-depth": depth, "data-status": item.status,
          onclick: () => { selected = item.id; render(); } },
        el("div", { className: "label", title: label, style: { paddingLeft: 8 + depth * 16 + "px" } },
          el("span", { className: "name", text: item.schema_name }),
          item.schema_title ? el("span", { className: "muted", text: " · " + item.schema_title }) : null),
        el("div", { className: "track" },
          el("div", { className: "bar status-" + safeClass(item.status),
            style: { left: left + "%", width: width + "%" }, title: item.status }),
          el("span", { className: "bar-time" + (left + width > 85 ? " inside" : ""),
            style: left + width > 85
              ? { right: Math.max(100 - left - width, 0) + "%", marginRight: "4px" }
              : { left: left + width + "%", marginLeft: "4px" },
            text: formatDuration(to - from) })));
      return row;
    });
    const chosen = data.spans.find((item) => item.id === selected) || null;
    const ending = data.ending
      ? el("div", { className: "ending " + safeClass(instance.status), id: "ending", text: data.ending.text })
      : null;
    const live = !TERMINAL.has(instance.status);
    const terminate = live
      ? el("button", { id: "terminate", onclick: terminateRun, text: "Terminate…" })
      : null;
    const version = data.agent_version;
    main.replaceChildren(...[
      el("p", {}, el("a", { href: "/", text: "← all runs" })),
      el("h1", {}, instance.agent_id + " ", statusBadge(instance.status), " ", terminate),
      el("div", { className: "facts" },
        el("div", {}, el("span", { text: "Instance" }), instance.id),
        el("div", {}, el("span", { text: "Version" }),
          version ? version.name + " (" + version.external_identifier + ")" : "–"),
        el("div", {}, el("span", { text: "Started" }), formatWhen(instance.started_at)),
        el("div", {}, el("span", { text: "Duration" }), formatDuration(runDuration(instance, now))),
        el("div", {}, el("span", { text: "Spans" }), String(data.spans.length))),
      ending,
      el("div", { className: "waterfall", id: "waterfall" },
        el("div", { className: "axis" }, el("div", { className: "label", text: "Span" }),
          el("div", { className: "ticks" }, ...ticks)),
        ...(rows.length ? rows : [el("p", { className: "muted", text: "No spans recorded." })])),
      renderDetails(chosen),
    ].filter((node) => node !== null));
  }

  async function terminateRun() {
    const reason = window.prompt("Terminate this run. Reason:", "terminated by an operator");
    if (reason === null) return;
    const response = await fetch("/_local/instances/" + encodeURIComponent(instanceId) + "/terminate", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason: reason }),
    });
    if (!response.ok) setLive("terminate failed: " + response.status, true);
  }

  return poller(async () => {
    const next = await getJSON("/_local/instances/" + encodeURIComponent(instanceId));
    if (next.version !== seen || !TERMINAL.has(next.instance.status)) {
      data = next;
      seen = next.version;
      render();
    }
  });
}

function route() {
  const main = document.getElementById("main");
  const path = window.location.pathname;
  const match = /^\/instances\/([^/]+)$/.exec(path);
  if (match) {
    document.title = "run · aioprefactor timeline";
    instanceView(main, decodeURIComponent(match[1]));
  } else {
    listView(main);
  }
}

document.addEventListener("DOMContentLoaded", route);
