// The workflows page: live counts and statuses, and actions on several workflows at once.
import { api, ApiError, confirmAction, refreshTimes, toast } from "./common.js";

const POLL_MS = 3000;
const table = document.getElementById("workflows");
const bulkbar = document.getElementById("bulkbar");
const selectAll = document.getElementById("select-all");
const params = new URLSearchParams(location.search);
const firstPage = !params.get("cursor");

refreshTimes();
setInterval(() => refreshTimes(), 15000);

// ------------------------------------------------------------------ custom time range
const range = document.getElementById("range");
range?.addEventListener("change", () => {
  const custom = range.value === "custom";
  for (const id of ["custom-from", "custom-to"]) document.getElementById(id).hidden = !custom;
  if (!custom) range.form.requestSubmit();
});
document.getElementById("name")?.addEventListener("change", (e) => e.target.form.requestSubmit());

// ------------------------------------------------------------------ selection
function checks() {
  return [...table.querySelectorAll(".row-check")];
}

function selected() {
  return checks().filter((c) => c.checked).map((c) => c.value);
}

function syncSelection() {
  const ids = selected();
  for (const c of checks()) c.closest("tr").classList.toggle("selected", c.checked);
  bulkbar.hidden = ids.length === 0;
  document.getElementById("bulk-count").textContent =
    `${ids.length} selected`;
  const all = checks();
  selectAll.checked = all.length > 0 && ids.length === all.length;
  selectAll.indeterminate = ids.length > 0 && ids.length < all.length;
}

table.addEventListener("change", (event) => {
  if (event.target.classList.contains("row-check")) syncSelection();
});
selectAll.addEventListener("change", () => {
  for (const c of checks()) c.checked = selectAll.checked;
  syncSelection();
});

const ACTIONS = {
  retry: {
    title: "Retry the selected workflows?",
    text: "Failed steps, and the steps not run because of them, run again.",
    yes: "Retry",
    path: (id) => `/v1/workflows/${encodeURIComponent(id)}/retry`,
    body: {},
    done: "retried",
  },
  cancel: {
    title: "Cancel the selected workflows?",
    text: "Pending and retrying steps become cancelled; requests in flight finish but start nothing.",
    yes: "Cancel them",
    path: (id) => `/v1/workflows/${encodeURIComponent(id)}/cancel`,
    body: { compensate: false },
    done: "cancelled",
  },
  compensate: {
    title: "Cancel and compensate the selected workflows?",
    text: "They are cancelled, then the compensation of each completed step runs, newest first.",
    yes: "Cancel and compensate",
    path: (id) => `/v1/workflows/${encodeURIComponent(id)}/cancel`,
    body: { compensate: true },
    done: "cancelled",
  },
};

async function runAll(ids, action) {
  const results = { ok: [], refused: [] };
  let next = 0;
  async function worker() {
    while (next < ids.length) {
      const id = ids[next++];
      try {
        const doc = await api(action.path(id), { method: "POST", body: action.body });
        results.ok.push(id);
        updateRow({ id, status: doc.status, completedAt: doc.completedAt, startedAt: doc.startedAt, error: doc.error });
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        results.refused.push(`${id}: ${error.message}`);
      }
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()]);
  return results;
}

bulkbar.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-bulk]");
  if (!button) return;
  const kind = button.dataset.bulk;
  if (kind === "clear") {
    for (const c of checks()) c.checked = false;
    syncSelection();
    return;
  }
  const ids = selected();
  const action = ACTIONS[kind];
  const yes = await confirmAction(action.title, `${ids.length} workflow${ids.length === 1 ? "" : "s"}. ${action.text}`, action.yes);
  if (!yes) return;
  for (const b of bulkbar.querySelectorAll("button")) b.disabled = true;
  try {
    const results = await runAll(ids, action);
    if (results.ok.length) toast(`${results.ok.length} ${action.done}.`);
    if (results.refused.length) {
      toast(`${results.refused.length} refused — ${results.refused.slice(0, 3).join("; ")}${results.refused.length > 3 ? "…" : ""}`, "error");
    }
  } finally {
    for (const b of bulkbar.querySelectorAll("button")) b.disabled = false;
    poll();
  }
});

// ------------------------------------------------------------------ live counts and rows
function updateRow(item) {
  const row = table.querySelector(`tr[data-id="${CSS.escape(item.id)}"]`);
  if (!row) return false;
  const badge = row.querySelector("[data-workflow-status]");
  if (badge.dataset.workflowStatus !== item.status) {
    badge.dataset.workflowStatus = item.status;
    badge.textContent = item.status.replaceAll("_", " ");
  }
  const dur = row.querySelector("[data-duration]");
  dur.dataset.start = item.startedAt || "";
  dur.dataset.end = item.completedAt || "";
  const err = row.querySelector(".err");
  const text = item.error ? item.error.code + (item.error.stepId ? ` at ${item.error.stepId}` : "") : "";
  if (err.textContent.trim() !== text) {
    err.textContent = "";
    if (item.error) {
      const code = document.createElement("code");
      code.textContent = item.error.code;
      err.append(code, item.error.stepId ? ` at ${item.error.stepId}` : "");
    }
    err.title = item.error ? item.error.message : "";
  }
  return true;
}

async function poll() {
  if (document.hidden) return;
  try {
    const data = await api(`/ui/api/workflows?${params.toString()}`);
    let total = 0;
    for (const [status, count] of Object.entries(data.counts)) {
      total += count;
      const node = document.querySelector(`[data-count-for="${status}"]`);
      if (node) node.textContent = count.toLocaleString();
    }
    document.querySelector('[data-count-for=""]').textContent = total.toLocaleString();
    document.getElementById("total-count").textContent = `${total.toLocaleString()} in all`;
    let fresh = 0;
    for (const item of data.items) {
      if (!updateRow(item) && firstPage) fresh += 1;
    }
    const banner = document.getElementById("new-banner");
    banner.hidden = fresh === 0;
    document.getElementById("new-text").textContent =
      `${fresh} newer workflow${fresh === 1 ? "" : "s"} since this page was loaded.`;
    refreshTimes(table);
    document.getElementById("refreshed").textContent = "live";
  } catch (error) {
    document.getElementById("refreshed").textContent = "not refreshing: " + error.message;
  }
}

setInterval(poll, POLL_MS);
document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
