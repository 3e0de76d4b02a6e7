// Shared helpers of the console's pages: API calls with the session's CSRF token,
// toasts, times and durations, and the global keyboard shortcuts.

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
export const csrf = csrfMeta ? csrfMeta.content : "";

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Call a route of this server with the session cookie; unsafe methods carry the CSRF token. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    headers["X-CSRF-Token"] = csrf;
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  if (response.status === 401) {
    // The session ended (expired, logged out, or the key was revoked).
    window.location.assign(`/ui/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, null);
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function toast(message, kind = "info") {
  const region = document.getElementById("toasts");
  if (!region) return;
  const item = document.createElement("div");
  item.className = `toast ${kind}`;
  item.textContent = message;
  region.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 9000 : 5000);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export function formatTime(iso) {
  return iso ? absolute.format(new Date(iso)) : "–";
}

export function ago(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return relative.format(Math.round(seconds / size), unit);
    }
  }
  return "";
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}

/** Fill every <time data-relative> and [data-duration] below `root`; call again to refresh. */
export function refreshTimes(root = document) {
  for (const node of root.querySelectorAll("time[data-relative]")) {
    const iso = node.getAttribute("datetime");
    if (!iso) continue;
    node.textContent = ago(iso);
    node.title = formatTime(iso);
  }
  for (const node of root.querySelectorAll("[data-duration]")) {
    const start = node.dataset.start;
    if (!start) { node.textContent = "–"; continue; }
    const end = node.dataset.end ? new Date(node.dataset.end) : new Date();
    node.textContent = duration(end - new Date(start));
  }
}

export function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  const area = el("textarea", { class: "visually-hidden", "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  return Promise.resolve();
}

/** Ask for confirmation in the page's <dialog id="confirm">; resolves to true or false. */
export function confirmAction(title, text, yes) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

function typing(event) {
  const target = event.target;
  return target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

// Global shortcuts: "?" help, "/" search, "g w" workflows.
let pendingG = false;
document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event)) return;
  const help = document.getElementById("shortcuts");
  if (event.key === "?" && help) {
    help.showModal();
    event.preventDefault();
  } else if (event.key === "/") {
    const search = document.getElementById("q");
    if (search) search.focus();
    else window.location.assign("/ui/workflows#q");
    event.preventDefault();
  } else if (event.key === "g") {
    pendingG = true;
    setTimeout(() => { pendingG = false; }, 1200);
  } else if (pendingG && event.key === "w") {
    window.location.assign("/ui/workflows");
  }
});
document.getElementById("shortcuts-open")?.addEventListener("click", () => {
  document.getElementById("shortcuts").showModal();
});
