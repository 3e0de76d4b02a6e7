/**
 * Express (4 and 5) middleware that lets through only requests Baton signed.
 *
 *     app.post("/jobs/charge", batonMiddleware(secrets), (req, res) => {
 *       const step = req.body; // the parsed step request
 *       res.json({ success: true, result: { chargeId: "ch_1" } });
 *     });
 *
 * It needs the raw body: put it before any body parser on the route, or after
 * `express.raw({ type: "*\/*" })`. A verified request gets `req.body` parsed from JSON
 * (and `req.rawBody`, the bytes); anything else is answered 401 `{"error": …}`.
 */

import { type HeadersLike, type VerifyOptions, verifySignature } from "./verify.js";

/** The parts of an Express request and response the middleware uses. */
export interface MiddlewareRequest extends AsyncIterable<Uint8Array | string> {
  headers: HeadersLike;
  body?: unknown;
  rawBody?: Uint8Array;
}

export interface MiddlewareResponse {
  status(code: number): MiddlewareResponse;
  json(body: unknown): unknown;
}

export type NextFunction = (error?: unknown) => void;

export function batonMiddleware(
  secrets: string | readonly string[],
  options: VerifyOptions = {},
): (req: MiddlewareRequest, res: MiddlewareResponse, next: NextFunction) => Promise<void> {
  return async (req, res, next) => {
    try {
      const raw = await rawBody(req);
      if (!(await verifySignature(raw, req.headers, secrets, options))) {
        res.status(401).json({ error: "invalid signature" });
        return;
      }
      let parsed: unknown;
      try {
        parsed = raw.length ? JSON.parse(new TextDecoder().decode(raw)) : undefined;
      } catch {
        res.status(400).json({ error: "request body is not valid JSON" });
        return;
      }
      req.rawBody = raw;
      req.body = parsed;
      next();
    } catch (error) {
      next(error);
    }
  };
}

async function rawBody(req: MiddlewareRequest): Promise<Uint8Array> {
  const { body } = req;
  if (body instanceof Uint8Array) return body; // express.raw() (a Buffer)
  if (typeof body === "string") return new TextEncoder().encode(body); // express.text()
  if (body !== undefined && body !== null && Object.keys(body as object).length > 0) {
    throw new TypeError(
      "batonMiddleware needs the raw body: mount it before express.json(), or use express.raw()",
    );
  }
  const chunks: Uint8Array[] = [];
  for await (const chunk of req) {
    chunks.push(typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk);
  }
  const joined = new Uint8Array(chunks.reduce((size, chunk) => size + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.length;
  }
  return joined;
}
