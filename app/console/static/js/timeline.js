// The timeline (Gantt) of a workflow's attempts, drawn on a canvas: one row per step in
// the order steps first started, only the rows in view are drawn, so it stays fast with
// tens of thousands of attempts. Attempts in flight grow until they finish.

const ROW = 22;
const AXIS = 28;
const GUTTER = 190;
const COLOURS = {
  completed: "--st-completed",
  failed: "--st-failed",
  async: "--st-running",
  "callback.completed": "--st-completed",
  "callback.failed": "--st-failed",
  running: "--st-running",
  compensation: "--st-compensating",
};

function niceStep(span, target) {
  const raw = span / target;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
  return 10 * power;
}

function label(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${+(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${+(ms / 60000).toFixed(1)} min`;
  return `${+(ms / 3600000).toFixed(1)} h`;
}

export class Timeline {
  constructor({ wrap, canvas, spacer, tip, summary, onPick }) {
    Object.assign(this, { wrap, canvas, spacer, tip, summary, onPick });
    this.rows = [];
    this.rowOf = new Map();
    this.live = new Map();
    this.frame = 0;
    this.loaded = false;
    wrap.addEventListener("scroll", () => this.draw());
    window.addEventListener("resize", () => this.draw());
    canvas.addEventListener("mousemove", (e) => this.hover(e));
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("click", (e) => {
      const hit = this.hit(e);
      if (hit) onPick(hit.row.step);
    });
    setInterval(() => { if (this.live.size && !this.wrap.closest("[hidden]")) this.draw(); }, 500);
  }

  load(attempts) {
    this.rows = [];
    this.rowOf.clear();
    this.live.clear();
    for (const [step, kind, number, start, dur, http, outcome] of attempts) {
      this.bar(step, { kind, number, start, end: start + dur, http, outcome });
    }
    this.loaded = true;
    this.draw();
  }

  row(step) {
    let row = this.rowOf.get(step);
    if (!row) {
      row = { step, bars: [] };
      this.rowOf.set(step, row);
      this.rows.push(row);
    }
    return row;
  }

  bar(step, bar) {
    this.row(step).bars.push(bar);
  }

  /** A step's attempt started (from the event stream). */
  started(step, number, at) {
    if (!this.loaded) return;
    const bar = { kind: "step", number, start: at, end: null, http: null, outcome: "running" };
    this.bar(step, bar);
    this.live.set(step, bar);
    this.schedule();
  }

  /** It ended (the exact duration is in the attempt log; the event time is close to it). */
  ended(step, outcome, at) {
    if (!this.loaded) return;
    const bar = this.live.get(step);
    if (!bar) return;
    bar.end = Math.max(at, bar.start);
    bar.outcome = outcome;
    this.live.delete(step);
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  range() {
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const row of this.rows) {
      for (const bar of row.bars) {
        t0 = Math.min(t0, bar.start);
        t1 = Math.max(t1, bar.end ?? Date.now());
      }
    }
    if (t0 === Infinity) return [0, 1];
    return [t0, Math.max(t1, t0 + 1)];
  }

  draw() {
    const { wrap, canvas } = this;
    if (wrap.closest("[hidden]")) return;
    const width = wrap.clientWidth;
    const height = wrap.clientHeight;
    this.spacer.style.height = `${Math.max(0, AXIS + this.rows.length * ROW - height)}px`;
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
    }
    const css = getComputedStyle(document.documentElement);
    const colour = (name) => css.getPropertyValue(name).trim();
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = `12px ${css.getPropertyValue("--mono")}`;
    ctx.textBaseline = "middle";
    const [t0, t1] = this.range();
    this.scale = { t0, t1, plot: width - GUTTER - 48 };
    const x = (t) => GUTTER + ((t - t0) / (t1 - t0)) * this.scale.plot;
    const first = Math.floor(wrap.scrollTop / ROW);
    const count = Math.ceil((height - AXIS) / ROW) + 1;
    this.first = first;
    const muted = colour("--muted");
    const border = colour("--border");
    // grid and axis
    const step = niceStep(t1 - t0, Math.max(2, Math.floor(this.scale.plot / 110)));
    ctx.strokeStyle = border;
    ctx.fillStyle = muted;
    for (let t = 0; t <= t1 - t0 + 1e-9; t += step) {
      const px = Math.round(x(t0 + t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(px, AXIS - 6);
      ctx.lineTo(px, height);
      ctx.stroke();
      ctx.fillText(label(t), px + 4, AXIS / 2);
    }
    ctx.beginPath();
    ctx.moveTo(0, AXIS - 0.5);
    ctx.lineTo(width, AXIS - 0.5);
    ctx.stroke();
    // rows
    for (let i = first; i < Math.min(this.rows.length, first + count); i++) {
      const row = this.rows[i];
      const y = AXIS + (i - first) * ROW;
      if (i % 2) {
        ctx.fillStyle = colour("--surface-2");
        ctx.fillRect(0, y, width, ROW);
      }
      ctx.fillStyle = colour("--text");
      const name = row.step.length > 24 ? row.step.slice(0, 23) + "…" : row.step;
      ctx.fillText(name, 10, y + ROW / 2);
      for (const bar of row.bars) {
        const key = bar.kind === "compensation" ? "compensation" : bar.outcome;
        ctx.fillStyle = colour(COLOURS[key] || "--st-pending");
        const bx = x(bar.start);
        const bw = Math.max(2, x(bar.end ?? Date.now()) - bx);
        ctx.fillRect(bx, y + 5, bw, ROW - 10);
      }
    }
    if (!this.rows.length) {
      ctx.fillStyle = muted;
      ctx.font = `13px ${css.getPropertyValue("--font")}`;
      ctx.fillText("No attempt has been sent yet.", GUTTER, AXIS + 24);
    }
    const attempts = this.rows.reduce((n, r) => n + r.bars.length, 0);
    this.canvas.setAttribute("aria-label", `Timeline of ${attempts} attempts of ${this.rows.length} steps over ${label(t1 - t0)}`);
    this.summary.textContent = `${attempts.toLocaleString()} attempts of ${this.rows.length.toLocaleString()} steps over ${label(t1 - t0)}. Click a row to open its step.`;
  }

  hit(event) {
    const rect = this.canvas.getBoundingClientRect();
    const y = event.clientY - rect.top;
    if (y < AXIS) return null;
    const row = this.rows[this.first + Math.floor((y - AXIS) / ROW)];
    if (!row) return null;
    const { t0, t1, plot } = this.scale;
    const t = t0 + ((event.clientX - rect.left - GUTTER) / plot) * (t1 - t0);
    const bar = row.bars.find((b) => t >= b.start - (t1 - t0) / 200 && t <= (b.end ?? Date.now()) + (t1 - t0) / 200);
    return { row, bar };
  }

  hover(event) {
    const hit = this.hit(event);
    if (!hit) { this.tip.hidden = true; this.canvas.style.cursor = ""; return; }
    this.canvas.style.cursor = "pointer";
    const { row, bar } = hit;
    this.tip.hidden = false;
    this.tip.style.left = `${event.clientX + 14}px`;
    this.tip.style.top = `${event.clientY + 14}px`;
    this.tip.textContent = bar
      ? `${row.step} · ${bar.kind} attempt ${bar.number} · ${bar.outcome}${bar.http ? ` · HTTP ${bar.http}` : ""} · ${bar.end === null ? "running" : label(bar.end - bar.start)}`
      : `${row.step} · ${row.bars.length} attempt${row.bars.length === 1 ? "" : "s"}`;
  }
}
