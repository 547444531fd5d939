// The evorec dashboard: three pages (a user, the population, the model and service) drawn
// from the service's /dashboard/api/ JSON with hand-made SVG charts; no other script.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const KEY_STORAGE = "evorec-api-key";
const SERVICE_POLL_MS = 5000;

const state = { user: null, service: null, previousCounters: null, poll: null };

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function $(selector) {
  return document.querySelector(selector);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function detail(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((e) => e.msg).join("; ");
  return `the service answered ${status}`;
}

async function api(url, options = {}) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, ...options });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, detail(body, response.status));
  return body;
}

function show(node, visible) {
  node.hidden = !visible;
}

function message(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
  show(node, Boolean(text));
}

function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16);
}

function chips(categories, colors, names) {
  const span = el("span");
  for (const category of categories) {
    const index = names.indexOf(category);
    const color = index >= 0 ? colors[index] : "#999";
    span.append(el("span", { class: "chip", style: `background:${color}`, text: category }));
  }
  return span;
}

function legend(node, names, colors) {
  node.replaceChildren(
    ...names.map((name, c) => el("span", { style: `--swatch:${colors[c]}`, text: name }))
  );
}

// A stacked step chart: rows[t][c] is category c's share at step t (each row sums to 1).
// One <path class="series" data-category=...> per category; marks: step indices drawn as
// dashed lines; labels: the x-axis text of each step.
function stackedChart(node, { rows, names, colors, marks = [], labels, height = 240 }) {
  const width = 900;
  const pad = { left: 36, right: 8, top: 8, bottom: 22 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const steps = rows.length;
  const x = (t) => pad.left + (plotW * t) / Math.max(steps, 1);
  const y = (share) => pad.top + plotH * (1 - share);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "data-steps": String(steps),
  });
  const base = new Array(steps).fill(0);
  names.forEach((name, c) => {
    const upper = rows.map((row, t) => base[t] + row[c]);
    let d = "";
    for (let t = 0; t < steps; t++) {
      d += `${t === 0 ? "M" : "L"}${x(t).toFixed(1)},${y(upper[t]).toFixed(1)}`;
      d += `L${x(t + 1).toFixed(1)},${y(upper[t]).toFixed(1)}`;
    }
    for (let t = steps - 1; t >= 0; t--) {
      d += `L${x(t + 1).toFixed(1)},${y(base[t]).toFixed(1)}L${x(t).toFixed(1)},${y(base[t]).toFixed(1)}`;
    }
    const path = svg("path", {
      d: d + "Z",
      fill: colors[c],
      class: "series",
      "data-category": name,
      "data-values": rows.map((row) => row[c].toFixed(3)).join(" "),
    });
    const title = svg("title");
    title.textContent = name;
    path.append(title);
    chart.append(path);
    upper.forEach((value, t) => {
      base[t] = value;
    });
  });
  const axis = svg("g", { class: "axis" });
  for (const share of [0, 0.5, 1]) {
    axis.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(share), y2: y(share) }));
    const text = svg("text", { x: pad.left - 4, y: y(share) + 3, "text-anchor": "end" });
    text.textContent = `${Math.round(share * 100)}%`;
    axis.append(text);
  }
  const every = Math.max(1, Math.ceil(steps / 10));
  for (let t = 0; t < steps; t += every) {
    const text = svg("text", { x: x(t) + 2, y: height - 6 });
    text.textContent = labels[t];
    axis.append(text);
  }
  chart.append(axis);
  for (const mark of marks) {
    chart.append(
      svg("line", { class: "shift", x1: x(mark), x2: x(mark), y1: pad.top, y2: pad.top + plotH })
    );
  }
  node.replaceChildren(chart);
}

// -- the user page ---------------------------------------------------------------------

async function loadUser(userId) {
  state.user = userId;
  $("#user-id").value = userId;
  const view = $("#user-view");
  const note = $("#user-message");
  let data;
  try {
    data = await api(`/dashboard/api/users/${encodeURIComponent(userId)}`);
  } catch (error) {
    show(view, false);
    const text =
      error.status === 404
        ? `No user "${userId}": the store holds no event for this id.`
        : `Cannot show user "${userId}": ${error.message}`;
    message(note, text, error.status !== 404);
    return;
  }
  if (state.user !== userId) return; // another user was asked for meanwhile
  message(note, "");
  renderUser(data);
  show(view, true);
}

function renderUser(data) {
  $("#user-title").textContent = `User ${data.user_id}`;
  const unknown = data.events - data.known_events;
  $("#user-summary").textContent =
    `${data.events} stored events` +
    (unknown ? ` (${unknown} of items the model does not know)` : "") +
    ` · ${data.model} model ${data.model_version}`;
  const timeline = data.timeline;
  const names = timeline ? timeline.categories : [];
  const colors = data.colors;
  if (timeline) {
    const labels = timeline.events.map((e) => String(e.position + 1));
    const shifts = timeline.shifts.map((t) => timeline.events[t].position + 1);
    $("#timeline-caption").textContent =
      `(${timeline.category_column}: share of the top ${timeline.top_n} after each event; ` +
      `dashed: shifts at events ${shifts.join(", ") || "none"})`;
    stackedChart($("#timeline-chart"), {
      rows: timeline.model_share,
      names,
      colors,
      marks: timeline.shifts,
      labels,
    });
    stackedChart($("#observed-chart"), {
      rows: timeline.observed,
      names,
      colors,
      marks: timeline.shifts,
      labels,
      height: 130,
    });
    legend($("#timeline-legend"), names, colors);
  } else {
    $("#timeline-caption").textContent = data.timeline_note || "";
    $("#timeline-chart").replaceChildren();
    $("#observed-chart").replaceChildren();
    $("#timeline-legend").replaceChildren();
  }
  $("#recs-caption").textContent = data.source === "popularity" ? "(most popular)" : "";
  const recs = $("#recommendations tbody");
  recs.replaceChildren(
    ...data.recommendations.map((item) => {
      const actions = el("td");
      const add = el("button", { type: "button", class: "link", text: "add" });
      add.addEventListener("click", () => {
        $("#event-item").value = String(item.item_id);
        $("#event-item").focus();
      });
      actions.append(add);
      if (data.explains) {
        const why = el("button", { type: "button", class: "link", text: "why?" });
        why.addEventListener("click", () => explain(data.user_id, item.item_id));
        actions.append(why);
      }
      return el(
        "tr",
        { "data-item": String(item.item_id) },
        el("td", { class: "num", text: String(item.rank) }),
        el("td", { text: item.title ? `${item.title} (${item.item_id})` : String(item.item_id) }),
        el("td", {}, chips(item.categories, colors, names)),
        el("td", { class: "num", text: item.score.toFixed(3) }),
        actions
      );
    })
  );
  show($("#explanation"), false);
  const history = $("#history tbody");
  history.replaceChildren(
    ...data.history.map((event) =>
      el(
        "tr",
        {},
        el("td", { text: formatTime(event.timestamp) }),
        el("td", {
          text:
            (event.title ? `${event.title} (${event.item_id})` : String(event.item_id)) +
            (event.known ? "" : " (not in the model)"),
        }),
        el("td", {}, chips(event.categories, colors, names)),
        el("td", { text: event.behavior || "" })
      )
    )
  );
}

async function explain(userId, itemId) {
  const box = $("#explanation");
  try {
    const data = await api(
      `/dashboard/api/users/${encodeURIComponent(userId)}/explain?item=${encodeURIComponent(itemId)}`
    );
    const rows = data.events.map((e) =>
      el(
        "li",
        {},
        `event ${e.position + 1}: item ${e.item_id}, score change ${e.score_change.toFixed(3)}` +
          (e.attention === null ? "" : `, attention ${(100 * e.attention).toFixed(0)}%`) +
          (e.shared_attributes.length ? `, shares ${e.shared_attributes.join(", ")}` : "")
      )
    );
    box.replaceChildren(el("b", { text: `Why item ${data.item_id}:` }), el("ol", {}, ...rows));
  } catch (error) {
    box.replaceChildren(el("span", { text: `No explanation: ${error.message}` }));
  }
  show(box, true);
}

async function postEvent(event) {
  event.preventDefault();
  const note = $("#event-message");
  if (!state.user) return;
  const body = { user_id: state.user, item_id: $("#event-item").value.trim() };
  const behavior = $("#event-behavior").value;
  if (behavior) body.behavior = behavior;
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const key = $("#event-key").value;
  if (key) {
    headers["X-API-Key"] = key;
    sessionStorage.setItem(KEY_STORAGE, key);
  }
  const started = performance.now();
  try {
    await api("/events", { method: "POST", headers, body: JSON.stringify(body) });
  } catch (error) {
    const text =
      error.status === 401
        ? "The service needs its API key to store events: type it in the API key field."
        : `Not stored: ${error.message}`;
    note.textContent = text;
    return;
  }
  await loadUser(state.user);
  note.textContent =
    `Stored item ${body.item_id}; chart and recommendations updated in ` +
    `${Math.round(performance.now() - started)} ms.`;
}

// -- the population page ---------------------------------------------------------------

async function loadPopulation() {
  const note = $("#population-message");
  message(note, "Computing the population summary…");
  let data;
  try {
    data = await api("/dashboard/api/population");
  } catch (error) {
    message(note, `Cannot summarise the population: ${error.message}`, true);
    return;
  }
  message(note, "");
  const numbers = [
    [`${data.users}`, "users summarised"],
    [`${data.shift_rate.toFixed(1)}`, "shifts per 100 events"],
    [`${(100 * data.users_shifting).toFixed(0)}%`, "users with a shift"],
    [`${(100 * data.follow).toFixed(0)}%`, `of the top ${data.top_n} in a user's recent category`],
    [`${(100 * data.coverage).toFixed(1)}%`, "of the catalogue recommended"],
  ];
  $("#population-numbers").replaceChildren(
    ...numbers.map(([value, label]) =>
      el("div", { class: "number" }, el("b", { text: value }), el("span", { text: label }))
    )
  );
  stackedChart($("#trend-chart"), {
    rows: data.trend,
    names: data.categories,
    colors: data.colors,
    labels: data.periods,
  });
  legend($("#trend-legend"), data.categories, data.colors);
  stackedChart($("#mix-chart"), {
    rows: [data.recent, data.recommended],
    names: data.categories,
    colors: data.colors,
    labels: [`last events`, `top ${data.top_n} now`],
    height: 130,
  });
  show($("#population-view"), true);
}

// -- the model and service page --------------------------------------------------------

async function loadService() {
  const note = $("#service-message");
  let data;
  try {
    data = await api("/dashboard/api/service");
  } catch (error) {
    message(note, `Cannot read the service: ${error.message}`, true);
    return;
  }
  message(note, "");
  state.service = data;
  const now = performance.now();
  const previous = state.previousCounters;
  const seconds = previous ? (now - previous.at) / 1000 : null;
  const counts = {};
  for (const row of data.routes) counts[`${row.method} ${row.route}`] = row.requests;
  const rate = (row) => {
    if (!previous || !seconds) return "";
    const before = previous.counts[`${row.method} ${row.route}`] || 0;
    return ((row.requests - before) / seconds).toFixed(2);
  };
  $("#service-numbers").replaceChildren(
    ...[
      [String(data.requests), "requests served"],
      [previous && seconds ? ((data.requests - previous.total) / seconds).toFixed(2) : "…", "requests per second (last poll)"],
      [String(data.events_ingested), "events ingested"],
      [String(data.dataset.events), "training events"],
    ].map(([value, label]) =>
      el("div", { class: "number" }, el("b", { text: value }), el("span", { text: label }))
    )
  );
  state.previousCounters = { at: now, counts, total: data.requests };
  const facts = [
    ["model", data.model],
    ["version", data.model_version],
    ["directory", data.model_dir],
    ["evorec", data.evorec_version || ""],
    ["dataset", `${data.dataset.name}: ${data.dataset.users} users, ${data.dataset.items} items`],
    ["trained up to", data.cutoff ? formatTime(data.cutoff.timestamp) : "(no cut-off recorded)"],
    ["writes", data.keyed ? "need the API key" : "open to local clients (no API key)"],
  ];
  $("#model-facts").replaceChildren(
    ...facts.flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: value })])
  );
  $("#lineage").replaceChildren(
    ...(data.lineage.length
      ? data.lineage.map((version) => el("li", { text: version }))
      : [el("li", { class: "muted", text: "trained from scratch (no parent version)" })])
  );
  const metrics = data.metrics ? flatten(data.metrics) : [];
  $("#metrics tbody").replaceChildren(
    ...(metrics.length
      ? metrics.map(([key, value]) =>
          el("tr", {}, el("td", { text: key }), el("td", { class: "num", text: value }))
        )
      : [el("tr", {}, el("td", { class: "muted", text: "no evaluation recorded with this model" }))])
  );
  $("#routes tbody").replaceChildren(
    ...data.routes.map((row) =>
      el(
        "tr",
        {},
        el("td", { text: `${row.method} ${row.route}` }),
        el("td", { class: "num", text: String(row.requests) }),
        el("td", { class: "num", text: rate(row) }),
        el("td", { class: "num", text: row.mean_ms === null ? "" : row.mean_ms.toFixed(1) }),
        el("td", { class: "num", text: row.p95_ms === null ? "" : String(row.p95_ms) }),
        el("td", {
          text: Object.entries(row.statuses)
            .map(([status, n]) => `${status}: ${n}`)
            .join(", "),
        })
      )
    )
  );
  show($("#service-view"), true);
}

function flatten(record, prefix = "") {
  const out = [];
  for (const [key, value] of Object.entries(record)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (typeof value === "number") out.push([name, Number.isInteger(value) ? String(value) : value.toFixed(4)]);
    else if (value && typeof value === "object" && !Array.isArray(value)) out.push(...flatten(value, name));
  }
  return out;
}

// -- routing ---------------------------------------------------------------------------

function route() {
  const [page, ...rest] = (location.hash.slice(1) || "user").split("/");
  const name = ["user", "population", "service"].includes(page) ? page : "user";
  for (const section of document.querySelectorAll(".page")) {
    show(section, section.id === `page-${name}`);
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  clearInterval(state.poll);
  if (name === "user" && rest.length) loadUser(decodeURIComponent(rest.join("/")));
  if (name === "population") loadPopulation();
  if (name === "service") {
    loadService();
    state.poll = setInterval(loadService, SERVICE_POLL_MS);
  }
}

async function start() {
  $("#user-search").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#user-id").value.trim();
    if (!id) return;
    const hash = `#user/${encodeURIComponent(id)}`;
    if (location.hash === hash) loadUser(id);
    else location.hash = hash;
  });
  $("#event-form").addEventListener("submit", postEvent);
  $("#event-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  window.addEventListener("hashchange", route);
  try {
    const service = await api("/dashboard/api/service");
    $("#model-badge").textContent = `${service.model} · ${service.model_version}`;
    show($("#event-key-field"), service.keyed);
    const select = $("#event-behavior");
    for (const behavior of service.behaviors) select.append(el("option", { value: behavior, text: behavior }));
  } catch (error) {
    $("#model-badge").textContent = `service unavailable: ${error.message}`;
  }
  route();
}

start();
