/**
 * A small typed client for Baton's workflows: create, get, cancel, retry, wait.
 *
 *     const baton = new BatonClient({ baseUrl: "http://127.0.0.1:8000", apiKey });
 *     const doc = await baton.workflows.create({ steps: [{ id: "a", url: "https://…" }] });
 *     const final = await baton.workflows.wait(doc.id, { timeoutMs: 60_000 });
 *
 * Errors answered by the server reject with `ProblemError` (status, title, detail,
 * errors, type), built from its RFC 9457 problem document.
 */

export type WorkflowStatus =
  | "pending"
  | "running"
  | "completed"
  | "failed"
  | "cancelled"
  | "compensating"
  | "compensated"
  | "compensation_failed";

export type StepStatus =
  | "pending"
  | "running"
  | "retrying"
  | "completed"
  | "failed"
  | "skipped"
  | "cancelled";

/** Statuses nothing happens after without an explicit action. */
export const TERMINAL_STATUSES: ReadonlySet<WorkflowStatus> = new Set([
  "completed",
  "failed",
  "cancelled",
  "compensated",
  "compensation_failed",
]);

export interface StepError {
  code: string;
  message: string;
  httpStatus: number | null;
}

export interface Step {
  id: string;
  url?: string | null;
  queue?: string | null;
  dependsOn: string[];
  status: StepStatus;
  attempts: number;
  maxAttempts: number;
  startedAt: string | null;
  completedAt: string | null;
  result: unknown;
  error: StepError | null;
  compensation: string | null;
  compensationStatus: "pending" | "running" | "completed" | "failed" | null;
  [field: string]: unknown;
}

/** A workflow's status document (fields this version does not name are kept). */
export interface Workflow {
  id: string;
  name: string | null;
  status: WorkflowStatus;
  context: Record<string, unknown>;
  saga: boolean;
  failFast: boolean;
  timeout: number;
  onComplete: string | null;
  onError: string | null;
  createdAt: string;
  startedAt: string | null;
  completedAt: string | null;
  currentSteps: string[];
  completedSteps: string[];
  failedSteps: string[];
  skippedSteps: string[];
  results: Record<string, unknown>;
  error: { code: string; message: string; stepId: string | null } | null;
  steps: Step[];
  [field: string]: unknown;
}

/** A create body (DESIGN §3); see the API reference for every field. */
export interface WorkflowCreate {
  id?: string;
  name?: string;
  steps: Array<{ id: string; url?: string; dependsOn?: string[]; [field: string]: unknown }>;
  context?: Record<string, unknown>;
  [field: string]: unknown;
}

export interface FieldError {
  path: string;
  message: string;
}

/** The server answered 4xx or 5xx. */
export class ProblemError extends Error {
  override name = "ProblemError";
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly errors: FieldError[];
  readonly type: string;
  /** The whole problem document, unknown fields included. */
  readonly document: Record<string, unknown>;

  constructor(status: number, document: Record<string, unknown>) {
    const title = typeof document.title === "string" ? document.title : `HTTP ${status}`;
    const detail = typeof document.detail === "string" ? document.detail : "";
    const errors = Array.isArray(document.errors)
      ? (document.errors as Array<Record<string, unknown>>).map((e) => ({
          path: String(e.path ?? ""),
          message: String(e.message ?? ""),
        }))
      : [];
    const listed = errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message));
    super(
      `${status} ${title}${detail ? `: ${detail}` : ""}${listed.length ? ` (${listed.join("; ")})` : ""}`,
    );
    this.status = typeof document.status === "number" ? document.status : status;
    this.title = title;
    this.detail = detail;
    this.errors = errors;
    this.type = typeof document.type === "string" ? document.type : "about:blank";
    this.document = document;
  }
}

/** `wait()` gave up; `workflow` is the last status document read. */
export class WaitTimeoutError extends Error {
  override name = "WaitTimeoutError";
  constructor(readonly workflow: Workflow) {
    super(`workflow ${JSON.stringify(workflow.id)} is still ${workflow.status}`);
  }
}

export interface ClientOptions {
  /** The server, e.g. `http://127.0.0.1:8000`. */
  baseUrl: string;
  apiKey: string;
  /** A `fetch` to use instead of the global one (tests, proxies). */
  fetch?: typeof fetch;
  /** Milliseconds one request may take. Default 30,000. */
  timeoutMs?: number;
}

export interface WaitOptions {
  /** Give up after this long (milliseconds). Default 60,000; `Infinity` waits for ever. */
  timeoutMs?: number;
  /** The longest pause between two reads (milliseconds). Default 1,000. */
  pollIntervalMs?: number;
}

export class BatonClient {
  readonly baseUrl: string;
  readonly workflows: Workflows;
  private readonly apiKey: string;
  private readonly fetcher: typeof fetch;
  private readonly timeoutMs: number;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.fetcher = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.workflows = new Workflows(this);
  }

  /** Send one request; the parsed JSON answer, or a rejection with `ProblemError`. */
  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const response = await this.fetcher(this.baseUrl + path, {
      method,
      headers: {
        Authorization: `Bearer ${this.apiKey}`,
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const text = await response.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (!response.ok) {
      const document =
        parsed !== null && typeof parsed === "object"
          ? (parsed as Record<string, unknown>)
          : { title: response.statusText || `HTTP ${response.status}`, detail: text.slice(0, 300) };
      throw new ProblemError(response.status, document);
    }
    if (parsed === null && text) {
      throw new Error(`${method} ${path} answered ${response.status} with a body that is not JSON`);
    }
    return parsed as T;
  }
}

const segment = encodeURIComponent;

export class Workflows {
  constructor(private readonly client: BatonClient) {}

  /** Create a workflow; with an existing `id` and the same body, the existing one. */
  create(body: WorkflowCreate, options: { idempotencyKey?: string } = {}): Promise<Workflow> {
    const headers: Record<string, string> = {};
    if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
    return this.client.request("POST", "/v1/workflows", body, headers);
  }

  get(id: string): Promise<Workflow> {
    return this.client.request("GET", `/v1/workflows/${segment(id)}`);
  }

  /** Cancel (with `compensate`, run the compensations of completed steps first). */
  cancel(id: string, options: { compensate?: boolean } = {}): Promise<Workflow> {
    return this.client.request("POST", `/v1/workflows/${segment(id)}/cancel`, {
      compensate: options.compensate ?? false,
    });
  }

  /** Run a failed workflow again; with `stepId`, re-run that step and what follows it. */
  retry(id: string, options: { stepId?: string } = {}): Promise<Workflow> {
    const path = options.stepId
      ? `/v1/workflows/${segment(id)}/steps/${segment(options.stepId)}/retry`
      : `/v1/workflows/${segment(id)}/retry`;
    return this.client.request("POST", path);
  }

  /** Resolve with the final status document once the workflow is finished. */
  async wait(id: string, options: WaitOptions = {}): Promise<Workflow> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    const ceiling = options.pollIntervalMs ?? 1_000;
    let pause = 100;
    for (;;) {
      const workflow = await this.get(id);
      if (TERMINAL_STATUSES.has(workflow.status)) return workflow;
      const left = deadline - Date.now();
      if (left <= 0) throw new WaitTimeoutError(workflow);
      await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)));
      pause = Math.min(ceiling, pause * 1.5);
    }
  }
}
