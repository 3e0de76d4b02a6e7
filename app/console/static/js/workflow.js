// A workflow's page: the DAG drawn by the server, kept live from the event stream by
// changing attributes only; the step, group and callback panels; the timeline; events;
// and the actions (cancel, cancel with compensation, retry, retry a step).
import {
  api, ApiError, confirmAction, copyText, duration, el, formatTime, refreshTimes, toast,
} from "./common.js";
import { setupGraph } from "./graph.js";
import { follow } from "./stream.js";
import { Timeline } from "./timeline.js";

const data = JSON.parse(document.getElementById("wf-data").textContent);
const WF = data.workflowId;
const FINAL = new Set(data.final);
const STEP_STATUSES = ["pending", "running", "retrying", "completed", "failed", "skipped", "cancelled"];
const wfPath = `/v1/workflows/${encodeURIComponent(WF)}`;
const uiPath = `/ui/api/workflows/${encodeURIComponent(WF)}`;

// ------------------------------------------------------------------ state
const steps = new Map(); // id -> {index, status, attempts, max, comp, hasComp, group}
data.steps.forEach(([id, status, attempts, max, comp, hasComp], index) => {
  steps.set(id, { id, index, status, attempts, max, comp, hasComp: !!hasComp, group: null });
});
const ids = data.steps.map((s) => s[0]);
const groups = new Map(); // group id -> {members: [ids], el}
for (const [gid, indices] of Object.entries(data.groups)) {
  const members = indices.map((i) => ids[i]);
  groups.set(gid, { id: gid, members, el: document.querySelector(`[data-group-id="${CSS.escape(gid)}"]`) });
  for (const id of members) steps.get(id).group = gid;
}
const nodeEls = new Map();
for (const node of document.querySelectorAll(".node[data-step-id]")) nodeEls.set(node.dataset.stepId, node);
let workflowStatus = data.status;
const callbacks = { ...data.callbacks };

const statusEl = document.getElementById("wf-status");
const live = document.getElementById("live");
const viewport = document.getElementById("viewport");
const canvas = document.getElementById("canvas");
const side = document.getElementById("side");
const sideBody = document.getElementById("side-body");
const sideTitle = document.getElementById("side-title");

const graph = setupGraph({
  viewport,
  canvas,
  onZoom: (z) => { document.getElementById("zoom-level").textContent = `${Math.round(z * 100)}%`; },
});

// ------------------------------------------------------------------ applying changes
const dirtyGroups = new Set();
let summaryDirty = false;
let frame = 0;

function attemptsText(s) {
  return s.attempts ? `${s.attempts}/${s.max} attempts` : "";
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(flush);
}

/** Record a step's new status (and attempts); only attributes and texts change. */
function setStep(id, status, attempts) {
  const s = steps.get(id);
  if (!s) return;
  if (attempts !== undefined && attempts !== null) s.attempts = attempts;
  if (status && status !== s.status) {
    s.status = status;
    summaryDirty = true;
    if (s.group) dirtyGroups.add(s.group);
  }
  const node = nodeEls.get(id);
  if (node) {
    if (node.dataset.status !== s.status) node.dataset.status = s.status;
    const st = node.querySelector(".st");
    if (st.textContent !== s.status) st.textContent = s.status;
    const att = node.querySelector(".att");
    const text = attemptsText(s);
    if (att.textContent !== text) att.textContent = text;
  }
  const cell = openCells.get(id);
  if (cell && cell.dataset.status !== s.status) {
    cell.dataset.status = s.status;
    cell.title = `${id} · ${s.status}`;
  }
  if (openStep === id) refreshStepPanelSoon();
  schedule();
}

function counts(members) {
  const out = Object.fromEntries(STEP_STATUSES.map((s) => [s, 0]));
  for (const id of members) out[steps.get(id).status] += 1;
  return out;
}

function flush() {
  frame = 0;
  for (const gid of dirtyGroups) {
    const group = groups.get(gid);
    if (!group || !group.el) continue;
    const c = counts(group.members);
    const total = group.members.length;
    for (const bar of group.el.querySelectorAll("[data-bar]")) {
      bar.style.width = `${(100 * c[bar.dataset.bar]) / total}%`;
    }
    group.el.querySelector(".gsum").textContent = STEP_STATUSES.filter((s) => c[s])
      .map((s) => `${c[s].toLocaleString()} ${s}`).join(", ");
    if (openGroup === gid) renderGroupCounts(c);
  }
  dirtyGroups.clear();
  if (summaryDirty) {
    summaryDirty = false;
    const c = counts(ids);
    for (const chip of document.querySelectorAll("[data-summary]")) {
      const n = c[chip.dataset.summary];
      chip.dataset.count = String(n);
      chip.querySelector("b").textContent = n.toLocaleString();
    }
  }
}

function setWorkflow(status, error, completedAt, startedAt) {
  if (status && status !== workflowStatus) {
    workflowStatus = status;
    statusEl.dataset.workflowStatus = status;
    statusEl.textContent = status.replaceAll("_", " ");
  }
  if (error !== undefined) {
    const banner = document.getElementById("wf-error");
    banner.hidden = !error;
    if (error) {
      document.getElementById("wf-error-code").textContent = error.code;
      document.getElementById("wf-error-message").textContent = error.message;
      const link = document.getElementById("wf-error-step");
      link.hidden = !error.stepId;
      if (error.stepId) {
        link.href = `?step=${encodeURIComponent(error.stepId)}`;
        link.textContent = `Open step ${error.stepId}`;
      }
    }
  }
  const dur = document.getElementById("wf-duration");
  if (startedAt !== undefined) dur.dataset.start = startedAt || "";
  if (completedAt !== undefined) dur.dataset.end = completedAt || "";
  updateActions();
}

function setCompensation(id, status) {
  const s = steps.get(id);
  if (s) s.comp = status;
  const chip = document.querySelector(`[data-compensation-for="${CSS.escape(id)}"]`);
  if (chip) {
    chip.dataset.laneStatus = status || "idle";
    chip.querySelector(".st").textContent = status || "not due";
  }
  const summary = document.getElementById("compensation-summary");
  if (summary) {
    const c = {};
    for (const step of steps.values()) if (step.comp) c[step.comp] = (c[step.comp] || 0) + 1;
    const active = c.running ? "running" : c.failed ? "failed" : c.pending ? "pending" : c.completed ? "completed" : "idle";
    summary.dataset.laneStatus = active;
    summary.querySelector(".st").textContent = Object.entries(c).map(([k, v]) => `${v} ${k}`).join(", ");
  }
}

function setCallback(kind, status) {
  callbacks[kind] = status;
  const chip = document.querySelector(`[data-callback="${kind}"]`);
  if (chip) {
    chip.dataset.laneStatus = status || "idle";
    chip.querySelector(".st").textContent = status || "not due";
  }
}

/** Apply a status document (a snapshot): every step, the workflow, the compensations. */
function applySnapshot(doc) {
  for (const s of doc.steps) {
    setStep(s.id, s.status, s.attempts);
    const known = steps.get(s.id);
    if (known && known.hasComp && known.comp !== s.compensationStatus) setCompensation(s.id, s.compensationStatus);
  }
  setWorkflow(doc.status, doc.error, doc.completedAt, doc.startedAt);
}

async function resync() {
  const doc = await api(wfPath);
  applySnapshot(doc);
  if (FINAL.has(doc.status)) {
    const cb = await api(`${uiPath}/callbacks`);
    for (const [kind, state] of Object.entries(cb.states)) setCallback(kind, state);
  }
  return FINAL.has(doc.status);
}

// ------------------------------------------------------------------ events
const STEP_EVENTS = {
  "step.started": "running",
  "step.completed": "completed",
  "step.failed": "failed",
  "step.retrying": "retrying",
  "step.skipped": "skipped",
  "step.cancelled": "cancelled",
};
let compensationPoll = 0;

function onEvent(event) {
  const at = Date.parse(event.at);
  const type = event.type;
  if (STEP_EVENTS[type]) {
    const attempts = type === "step.started" ? event.data.attempt : undefined;
    setStep(event.stepId, STEP_EVENTS[type], attempts);
    if (type === "step.started") timeline.started(event.stepId, event.data.attempt, at);
    else if (type === "step.completed" || type === "step.failed") timeline.ended(event.stepId, STEP_EVENTS[type], at);
  } else if (type === "workflow.started") {
    for (const id of event.data.steps || []) setStep(id, "pending", 0);
    setWorkflow("running", null, null);
  } else if (type === "workflow.compensating") {
    setWorkflow("compensating", event.data.error);
    watchCompensation();
  } else if (type === "compensation.completed" || type === "compensation.failed") {
    setCompensation(event.stepId, type.split(".")[1]);
    watchCompensation();
  } else if (type === "callback.delivered" || type === "callback.failed") {
    setCallback(event.data.kind, type === "callback.delivered" ? "completed" : "failed");
  } else if (type.startsWith("workflow.") && type !== "workflow.created") {
    const status = type.slice("workflow.".length);
    setWorkflow(status, event.data.error ?? null, event.at);
    const kind = status === "completed" ? "on_complete" : "on_error";
    if (document.querySelector(`[data-callback="${kind}"]`)) setCallback(kind, "running");
  }
  eventsView.live(event);
}

/** While compensating, compensations start without an event: read their state from snapshots. */
function watchCompensation() {
  if (compensationPoll) return;
  const tick = async () => {
    compensationPoll = 0;
    try {
      const doc = await api(wfPath);
      applySnapshot(doc);
      if (doc.status === "compensating") compensationPoll = setTimeout(tick, 1000);
    } catch (error) {
      compensationPoll = setTimeout(tick, 3000);
    }
  };
  compensationPoll = setTimeout(tick, 150);
}

const STATE_TEXT = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", ended: "finished" };
let stream = null;

// ------------------------------------------------------------------ actions
const retryButton = document.getElementById("retry-workflow");
const cancelButton = document.getElementById("cancel-button");
const cancelMenu = document.getElementById("cancel-menu");

function updateActions() {
  retryButton.disabled = !["failed", "compensation_failed"].includes(workflowStatus);
  cancelButton.disabled = !["pending", "running"].includes(workflowStatus);
}

async function act(path, body, done) {
  try {
    const doc = await api(path, { method: "POST", body });
    applySnapshot(doc);
    toast(done);
    if (!stream.running) stream.restart();
    return doc;
  } catch (error) {
    if (error instanceof ApiError) toast(error.message, "error");
    else throw error;
    return null;
  }
}

function closeMenu() {
  cancelMenu.hidden = true;
  cancelButton.setAttribute("aria-expanded", "false");
}

cancelButton.addEventListener("click", () => {
  const open = cancelMenu.hidden;
  cancelMenu.hidden = !open;
  cancelButton.setAttribute("aria-expanded", String(open));
  if (open) cancelMenu.querySelector("[role=menuitem]").focus();
});
cancelMenu.addEventListener("keydown", (event) => {
  const items = [...cancelMenu.querySelectorAll("[role=menuitem]")];
  const at = items.indexOf(document.activeElement);
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    items[(at + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
    event.preventDefault();
  } else if (event.key === "Escape") {
    closeMenu();
    cancelButton.focus();
  }
});
document.addEventListener("click", (event) => {
  if (!event.target.closest(".menu")) closeMenu();
});
cancelMenu.addEventListener("click", async (event) => {
  const item = event.target.closest("[data-action]");
  if (!item) return;
  closeMenu();
  const compensate = item.dataset.action === "compensate";
  const yes = await confirmAction(
    compensate ? "Cancel and compensate this workflow?" : "Cancel this workflow?",
    compensate
      ? "Nothing new starts; then the compensation of each completed step runs, newest first."
      : "Pending and retrying steps become cancelled; requests in flight finish but start nothing.",
    compensate ? "Cancel and compensate" : "Cancel the workflow",
  );
  if (yes) await act(`${wfPath}/cancel`, { compensate }, compensate ? "Cancelled; compensating." : "Cancelled.");
});
retryButton.addEventListener("click", async () => {
  await act(`${wfPath}/retry`, {}, "Retrying the failed steps.");
});

// ------------------------------------------------------------------ side panel
let openStep = null;
let openGroup = null;
const openCells = new Map();
let panelTimer = 0;

function showPanel(title, badge) {
  side.hidden = false;
  sideTitle.textContent = title;
  const badgeHolder = document.getElementById("side-badge");
  badgeHolder.replaceChildren(badge || "");
  sideBody.replaceChildren();
  for (const n of canvas.querySelectorAll(".selected")) n.classList.remove("selected");
}

function closePanel() {
  const back = openStep ? graph.node(steps.get(openStep)?.group || openStep) : openGroup ? graph.node(openGroup) : null;
  side.hidden = true;
  openStep = null;
  openGroup = null;
  openCells.clear();
  for (const n of canvas.querySelectorAll(".selected")) n.classList.remove("selected");
  setQuery(null);
  if (back) back.focus();
}

function setQuery(step) {
  const url = new URL(location.href);
  if (step) url.searchParams.set("step", step);
  else url.searchParams.delete("step");
  history.replaceState(null, "", url);
}

document.getElementById("side-close").addEventListener("click", closePanel);
document.getElementById("side-link").addEventListener("click", async () => {
  await copyText(location.href);
  toast("Link copied.");
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !side.hidden && !document.querySelector("dialog[open]")) closePanel();
});

function badge(status) {
  return el("span", { class: `badge st-${status}` }, status.replaceAll("_", " "));
}

function stepLink(id) {
  return el("a", { href: `?step=${encodeURIComponent(id)}`, "data-open-step": id, class: "mono" }, id);
}

function json(value) {
  return el("pre", { class: "json", tabindex: "0" }, JSON.stringify(value, null, 2));
}

function refreshStepPanelSoon() {
  clearTimeout(panelTimer);
  panelTimer = setTimeout(() => { if (openStep) openStepPanel(openStep, { keepFocus: true }); }, 400);
}

async function openStepPanel(id, { keepFocus = false, backTo = null } = {}) {
  const s = steps.get(id);
  if (!s) { toast(`No step “${id}” in this workflow.`, "error"); return; }
  openStep = id;
  openGroup = null;
  setQuery(id);
  let step;
  let deps;
  try {
    [step, deps] = await Promise.all([
      api(`${wfPath}/steps/${encodeURIComponent(id)}`),
      api(`${wfPath}/steps/${encodeURIComponent(id)}/dependencies`),
    ]);
  } catch (error) {
    if (error instanceof ApiError) toast(error.message, "error");
    return;
  }
  if (openStep !== id) return;
  const scrollTop = side.scrollTop;
  showPanel(id, badge(step.status));
  const node = graph.node(s.group || id);
  if (node) node.classList.add("selected");
  const body = [];
  if (backTo) {
    body.push(el("p", {}, el("button", { type: "button", class: "link", onclick: () => openGroupPanel(backTo) }, "← back to the group")));
  }
  const retry = el("button", {
    type: "button",
    disabled: ["running", "retrying"].includes(step.status) || ["compensating", "compensated", "compensation_failed"].includes(workflowStatus),
    title: "Re-run this step and every step downstream of it",
    onclick: async () => {
      const yes = await confirmAction(`Retry step ${id}?`, "It runs again with a new webhook-id, and so does every step downstream of it.", "Retry the step");
      if (yes) await act(`${wfPath}/steps/${encodeURIComponent(id)}/retry`, {}, `Retrying ${id}.`);
    },
  }, "Retry step");
  body.push(el("div", { class: "code-actions" }, retry));
  const started = step.startedAt ? Date.parse(step.startedAt) : null;
  const ended = step.completedAt ? Date.parse(step.completedAt) : null;
  const policy = step.retries || {};
  body.push(el("dl", { class: "kv" },
    el("dt", {}, "URL"), el("dd", { class: "mono" }, step.url),
    el("dt", {}, "Attempts"), el("dd", {}, `${step.attempts} of ${step.maxAttempts}`),
    el("dt", {}, "Started"), el("dd", {}, formatTime(step.startedAt)),
    el("dt", {}, "Completed"), el("dd", {}, formatTime(step.completedAt)),
    el("dt", {}, "Duration"), el("dd", {}, started ? duration((ended || Date.now()) - started) : "–"),
    el("dt", {}, "Timeout"), el("dd", {}, `${step.timeout} s`),
    el("dt", {}, "Retries"), el("dd", {}, `${policy.backoff} from ${policy.delay} s, at most ${policy.maxDelay} s${policy.jitter ? ", jitter" : ""}`),
    step.when ? [el("dt", {}, "When"), el("dd", { class: "mono" }, step.when)] : null,
    step.continueOnFailure ? [el("dt", {}, "On failure"), el("dd", {}, "dependents continue")] : null,
    el("dt", {}, "Depends on"), el("dd", {}, deps.dependsOn.length ? deps.dependsOn.flatMap((d, i) => (i ? [", ", stepLink(d)] : [stepLink(d)])) : "–"),
    el("dt", {}, "Dependents"), el("dd", {}, deps.dependedOnBy.length ? deps.dependedOnBy.slice(0, 50).flatMap((d, i) => (i ? [", ", stepLink(d)] : [stepLink(d)])) : "–", deps.dependedOnBy.length > 50 ? ` and ${deps.dependedOnBy.length - 50} more` : ""),
    step.compensation ? [el("dt", {}, "Compensation"), el("dd", { class: "mono" }, step.compensation, " ", step.compensationStatus ? badge(step.compensationStatus) : "")] : null,
  ));
  if (step.error) {
    body.push(el("h3", {}, "Error"));
    body.push(el("div", { class: "error-banner" },
      el("code", {}, step.error.code),
      el("span", {}, step.error.message, step.error.httpStatus ? ` (HTTP ${step.error.httpStatus})` : "")));
  }
  if (step.status === "completed") {
    body.push(el("h3", {}, "Result"));
    body.push(json(step.result));
  }
  body.push(el("h3", {}, `Attempts (${step.attemptLog.length})`));
  if (!step.attemptLog.length) {
    body.push(el("p", { class: "muted" }, "No attempt has been sent yet."));
  } else {
    body.push(attemptsTable(id, step.attemptLog));
  }
  sideBody.replaceChildren(...body.flat().filter(Boolean));
  if (keepFocus) side.scrollTop = scrollTop;
  else sideTitle.focus({ preventScroll: true });
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false });
}

function attemptsTable(stepId, log) {
  const tbody = el("tbody");
  const table = el("table", { class: "attempts" },
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "#"), el("th", { scope: "col" }, "Kind"), el("th", { scope: "col" }, "Started"),
      el("th", { scope: "col" }, "Duration"), el("th", { scope: "col" }, "HTTP"), el("th", { scope: "col" }, "Outcome"))),
    tbody);
  let detail = null;
  const rows = [];
  function select(row, attempt) {
    for (const r of rows) r.setAttribute("aria-selected", String(r === row));
    if (detail) detail.remove();
    detail = el("tr", { class: "detail" }, el("td", { colspan: "6" }, attemptDetail(stepId, attempt)));
    row.after(detail);
  }
  [...log].reverse().forEach((a, i) => {
    const http = a.httpStatus;
    const row = el("tr", { class: "attempt", tabindex: "0", "aria-selected": "false" },
      el("td", {}, String(a.number)),
      el("td", {}, a.kind),
      el("td", { title: formatTime(a.startedAt) }, clock(a.startedAt)),
      el("td", {}, duration(a.durationMs)),
      el("td", {}, http ? el("span", { class: `http ${http < 300 ? "ok" : "bad"}` }, String(http)) : "–"),
      el("td", {}, a.outcome));
    row.addEventListener("click", () => select(row, a));
    row.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { select(row, a); e.preventDefault(); } });
    rows.push(row);
    tbody.append(row);
    if (i === 0) queueMicrotask(() => select(row, a));
  });
  return table;
}

function attemptDetail(stepId, a) {
  const box = el("div");
  box.append(el("dl", { class: "kv" },
    el("dt", {}, "webhook-id"), el("dd", { class: "mono" }, a.webhookId),
    el("dt", {}, "Started"), el("dd", {}, a.startedAt),
    el("dt", {}, "Duration"), el("dd", {}, `${a.durationMs} ms`),
    el("dt", {}, "HTTP status"), el("dd", {}, a.httpStatus ?? "no answer"),
    a.error ? [el("dt", {}, "Error"), el("dd", {}, el("code", {}, a.error.code), " ", a.error.message)] : null,
  ));
  box.append(el("h3", {}, "Response excerpt"));
  box.append(a.responseExcerpt ? el("pre", { class: "json", tabindex: "0" }, a.responseExcerpt) : el("p", { class: "muted" }, "No answer body."));
  const request = el("div", {}, el("p", { class: "muted" }, "Loading the request…"));
  box.append(el("h3", {}, "Request sent"), request);
  api(`${uiPath}/steps/${encodeURIComponent(stepId)}/request?kind=${a.kind}&attempt=${a.number}`)
    .then((r) => {
      if (!r.available) {
        request.replaceChildren(el("p", { class: "muted" }, r.reason));
        return;
      }
      let body = r.body;
      try { body = JSON.stringify(JSON.parse(r.body), null, 2); } catch (e) { /* shown as sent */ }
      const headers = Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`).join("\n");
      request.replaceChildren(
        el("div", { class: "code-actions" },
          el("button", { type: "button", class: "small", onclick: async () => { await copyText(r.curl); toast("curl command copied (signed just now)."); } }, "Copy as curl"),
          el("button", { type: "button", class: "small", onclick: async () => { await copyText(r.body); toast("Request body copied."); } }, "Copy body")),
        el("p", { class: "muted" }, el("span", { class: "mono" }, `POST ${r.url}`)),
        el("pre", { class: "json", tabindex: "0", "aria-label": "Request headers" }, headers),
        el("pre", { class: "json", tabindex: "0", "aria-label": "Request body" }, body),
        el("details", {}, el("summary", {}, "curl (signed just now, so a handler checking the timestamp accepts it)"), el("pre", { class: "json", tabindex: "0" }, r.curl)),
      );
    })
    .catch((error) => request.replaceChildren(el("p", { class: "muted" }, error.message)));
  return box;
}

function renderGroupCounts(c) {
  const holder = document.getElementById("group-counts");
  if (!holder) return;
  for (const button of holder.querySelectorAll("[data-filter]")) {
    const status = button.dataset.filter;
    if (status) button.querySelector("b").textContent = c[status].toLocaleString();
  }
}

function openGroupPanel(gid, { filter = null, title = null, members = null } = {}) {
  const group = groups.get(gid);
  const list = members || group.members;
  openGroup = gid;
  openStep = null;
  setQuery(null);
  const label = group && group.el ? group.el.querySelector(".label").textContent : "";
  showPanel(title || `${label} (${list.length.toLocaleString()} steps)`, null);
  if (group && group.el) group.el.classList.add("selected");
  openCells.clear();
  const c = counts(list);
  const search = el("input", { type: "search", placeholder: "find a step by id", "aria-label": "Find a step of the group by id", spellcheck: "false" });
  const chips = el("div", { class: "filter-chips", id: "group-counts", role: "group", "aria-label": "Show only steps in a status" },
    el("button", { type: "button", "data-filter": "", "aria-pressed": String(!filter) }, "all"),
    STEP_STATUSES.filter((s) => c[s]).map((s) => el("button", { type: "button", class: `st-${s}`, "data-filter": s, "aria-pressed": String(filter === s) }, `${s} `, el("b", {}, c[s].toLocaleString()))));
  const grid = el("div", { class: "grid-cells", role: "list", "aria-label": "Steps of the group; arrow keys move, Enter opens" });
  const fragment = document.createDocumentFragment();
  for (const id of list) {
    const s = steps.get(id);
    const cell = el("a", { class: "cell", role: "listitem", href: `?step=${encodeURIComponent(id)}`, "data-step-id": id, "data-status": s.status, title: `${id} · ${s.status}`, tabindex: "-1", "aria-label": `${id}, ${s.status}` });
    openCells.set(id, cell);
    fragment.append(cell);
  }
  grid.append(fragment);
  const first = grid.firstElementChild;
  if (first) first.tabIndex = 0;
  function applyFilter() {
    const wanted = chips.querySelector('[aria-pressed="true"]')?.dataset.filter || "";
    const text = search.value.trim();
    for (const [id, cell] of openCells) {
      cell.hidden = (wanted && steps.get(id).status !== wanted) || (text && !id.includes(text));
    }
  }
  chips.addEventListener("click", (event) => {
    const button = event.target.closest("[data-filter]");
    if (!button) return;
    for (const b of chips.querySelectorAll("[data-filter]")) b.setAttribute("aria-pressed", String(b === button));
    applyFilter();
  });
  search.addEventListener("input", applyFilter);
  grid.addEventListener("keydown", (event) => {
    const cells = [...grid.children].filter((c) => !c.hidden);
    const at = cells.indexOf(document.activeElement);
    if (at < 0) return;
    const perRow = Math.max(1, Math.round(grid.clientWidth / 17));
    const move = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow, Home: -at, End: cells.length - 1 - at }[event.key];
    if (move === undefined) return;
    const target = cells[Math.min(cells.length - 1, Math.max(0, at + move))];
    document.activeElement.tabIndex = -1;
    target.tabIndex = 0;
    target.focus();
    event.preventDefault();
  });
  sideBody.replaceChildren(
    el("p", { class: "muted" }, group ? "These steps share their dependencies and dependents (or follow one another), so the graph draws them as one box." : ""),
    chips, search, grid);
  if (filter) applyFilter();
  sideTitle.focus({ preventScroll: true });
}

function openSummary(status) {
  const members = ids.filter((id) => steps.get(id).status === status);
  openGroupPanel(null, { title: `${members.length.toLocaleString()} ${status} steps`, members });
}

async function openCallbackPanel(kind) {
  openStep = null;
  openGroup = null;
  setQuery(null);
  const name = kind === "on_complete" ? "onComplete" : "onError";
  showPanel(name, callbacks[kind] ? badge(callbacks[kind]) : null);
  const chip = document.querySelector(`[data-callback="${kind}"]`);
  const body = [el("dl", { class: "kv" }, el("dt", {}, "URL"), el("dd", { class: "mono" }, chip.title),
    el("dt", {}, "Status"), el("dd", {}, callbacks[kind] || "not due: sent once the workflow ends"))];
  try {
    const cb = await api(`${uiPath}/callbacks`);
    const attempts = cb.attempts.filter((a) => a.kind === kind);
    body.push(el("h3", {}, `Attempts (${attempts.length})`));
    for (const a of [...attempts].reverse()) {
      body.push(el("dl", { class: "kv" },
        el("dt", {}, `Attempt ${a.number}`), el("dd", {}, `${formatTime(a.startedAt)} · ${duration(a.durationMs)} · HTTP ${a.httpStatus ?? "–"} · ${a.outcome}`),
        el("dt", {}, "webhook-id"), el("dd", { class: "mono" }, a.webhookId),
        a.error ? [el("dt", {}, "Error"), el("dd", {}, `${a.error.code}: ${a.error.message}`)] : null,
        a.responseExcerpt ? [el("dt", {}, "Response"), el("dd", {}, el("pre", { class: "json", tabindex: "0" }, a.responseExcerpt))] : null));
    }
  } catch (error) {
    body.push(el("p", { class: "muted" }, error.message));
  }
  sideBody.replaceChildren(...body.flat().filter(Boolean));
  sideTitle.focus({ preventScroll: true });
}

// Opening things: links to ?step=… anywhere on the page open the panel in place.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const link = event.target.closest("a[href^='?step=']");
  if (link) {
    event.preventDefault();
    const id = new URLSearchParams(link.getAttribute("href").slice(1)).get("step");
    const inGroup = link.classList.contains("cell") ? openGroup : null;
    openStepPanel(id, { backTo: inGroup });
    return;
  }
  const group = event.target.closest("[data-group-id]");
  if (group) { openGroupPanel(group.dataset.groupId); return; }
  const summary = event.target.closest("[data-summary]");
  if (summary) { openSummary(summary.dataset.summary); return; }
  const cb = event.target.closest("[data-callback]");
  if (cb) openCallbackPanel(cb.dataset.callback);
});

// ------------------------------------------------------------------ tabs
const tabs = [...document.querySelectorAll('[role="tab"]')];
function selectTab(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (tab.id === "tab-timeline") loadTimeline();
  if (tab.id === "tab-events") eventsView.open();
}
for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const at = tabs.indexOf(tab);
    const move = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (move === undefined) return;
    const next = tabs[(at + move + tabs.length) % tabs.length];
    next.focus();
    selectTab(next);
  });
}
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return;
  if (["1", "2", "3", "4"].includes(event.key)) {
    selectTab(tabs[Number(event.key) - 1]);
    tabs[Number(event.key) - 1].focus();
  } else if ((event.key === "+" || event.key === "=") && !document.getElementById("panel-graph").hidden) graph.zoomIn();
  else if (event.key === "-" && !document.getElementById("panel-graph").hidden) graph.zoomOut();
  else if (event.key === "0" && !document.getElementById("panel-graph").hidden) graph.fit();
});

// ------------------------------------------------------------------ timeline
const timeline = new Timeline({
  wrap: document.getElementById("timeline-wrap"),
  canvas: document.getElementById("timeline"),
  spacer: document.getElementById("timeline-spacer"),
  tip: document.getElementById("timeline-tip"),
  summary: document.getElementById("timeline-summary"),
  onPick: (id) => openStepPanel(id),
});
let timelineLoading = null;
function loadTimeline() {
  if (timelineLoading) { timeline.draw(); return; }
  timelineLoading = api(`${uiPath}/timeline`).then((r) => timeline.load(r.attempts))
    .catch((error) => { timelineLoading = null; toast(error.message, "error"); });
}

// ------------------------------------------------------------------ events tab
const eventsView = (() => {
  const body = document.getElementById("events-body");
  const more = document.getElementById("events-more");
  const seen = new Set();
  let loaded = false;
  let before = null;
  function row(event, fresh) {
    const data = JSON.stringify(event.data);
    return el("tr", { class: fresh ? "new" : "" },
      el("td", { class: "mono" }, String(event.id)),
      el("td", { title: event.at }, clock(event.at)),
      el("td", { class: "type" }, event.type),
      el("td", {}, event.stepId ? stepLink(event.stepId) : ""),
      el("td", { class: "data" }, data === "{}" ? "" : data.length > 240 ? data.slice(0, 240) + "…" : data));
  }
  async function page() {
    more.disabled = true;
    try {
      const query = before ? `?before=${before}` : "";
      const r = await api(`${uiPath}/events${query}`);
      for (const event of r.items) {
        if (seen.has(event.id)) continue;
        seen.add(event.id);
        body.append(row(event, false));
      }
      before = r.nextBefore;
      more.hidden = !before;
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", page);
  return {
    open() {
      if (!loaded) { loaded = true; page(); }
    },
    live(event) {
      if (!loaded || seen.has(event.id)) return;
      seen.add(event.id);
      body.prepend(row(event, true));
    },
  };
})();

// ------------------------------------------------------------------ start
updateActions();
refreshTimes();
setInterval(() => refreshTimes(), 1000);
stream = follow(WF, {
  lastEventId: data.lastEventId,
  onEvent,
  onState: (state) => {
    live.dataset.state = state;
    live.textContent = STATE_TEXT[state];
  },
  resync,
});
if (workflowStatus === "compensating") watchCompensation();
if (data.selected) {
  if (steps.has(data.selected)) {
    const s = steps.get(data.selected);
    graph.reveal(s.group || data.selected);
    openStepPanel(data.selected);
  } else {
    toast(`No step “${data.selected}” in this workflow.`, "error");
  }
}
document.body.dataset.ready = "true";
performance.mark("baton:ready");
