/**
 * Standard Webhooks v1 verification of Baton's signed requests, on Web Crypto.
 *
 * Baton signs every step, compensation and callback request with each of its secrets:
 * `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))> ...`,
 * where `key` is the base64 part of a `whsec_<base64>` secret. A request is genuine
 * when one entry matches one secret and its `webhook-timestamp` is within the
 * tolerance (300 s) of the receiver's clock.
 */

/** Header names are matched case-insensitively. */
export type HeadersLike =
  | Headers
  | Record<string, string | string[] | undefined>
  | Iterable<[string, string]>;

export interface VerifyOptions {
  /** How far (seconds) the request's timestamp may be from `now`, either way. Default 300. */
  tolerance?: number;
  /** The receiver's clock, Unix seconds (for tests). Default: now. */
  now?: number;
}

export const DEFAULT_TOLERANCE = 300;
const SECRET_PREFIX = "whsec_";
const TIMESTAMP = /^[0-9]{1,15}$/;
const encoder = new TextEncoder();

/** Thrown for a secret that is not `whsec_` + base64: a mistake in configuration, not a forged request. */
export class InvalidSecretError extends TypeError {
  override name = "InvalidSecretError";
}

/**
 * Whether a fetch-API `Request` was signed by Baton with one of `secrets`.
 *
 * Reads a clone of the request, so the caller can still read the body
 * (`await request.json()`) afterwards.
 */
export async function verifyRequest(
  request: Request,
  secrets: string | readonly string[],
  options: VerifyOptions = {},
): Promise<boolean> {
  const body = new Uint8Array(await request.clone().arrayBuffer());
  return verifySignature(body, request.headers, secrets, options);
}

/**
 * Whether `body` (the raw bytes or text exactly as received) and `headers` were signed
 * with one of `secrets`. Resolves `false` for a missing, stale, malformed or wrong
 * signature; rejects with `InvalidSecretError` for a malformed secret.
 */
export async function verifySignature(
  body: Uint8Array | string,
  headers: HeadersLike,
  secrets: string | readonly string[],
  options: VerifyOptions = {},
): Promise<boolean> {
  const keys = await importKeys(typeof secrets === "string" ? [secrets] : secrets);
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp")?.trim();
  const signatures = header(headers, "webhook-signature");
  if (!id || !timestamp || !signatures || !TIMESTAMP.test(timestamp)) return false;
  const now = options.now ?? Date.now() / 1000;
  if (Math.abs(now - Number(timestamp)) > (options.tolerance ?? DEFAULT_TOLERANCE)) return false;

  const received = signatures
    .split(" ")
    .map((entry) => entry.split(","))
    .filter(([version, value]) => version === "v1" && value)
    .map(([, value]) => decodeBase64(value ?? ""))
    .filter((bytes): bytes is Uint8Array => bytes !== null);
  if (received.length === 0) return false;

  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const content = concat(encoder.encode(`${id}.${timestamp}.`), bytes);
  const subtle = await subtleCrypto();
  let matched = false;
  for (const key of keys) {
    const expected = new Uint8Array(await subtle.sign("HMAC", key, content as BufferSource));
    for (const candidate of received) matched = timingSafeEqual(expected, candidate) || matched;
  }
  return matched;
}

/** The HMAC key inside a `whsec_<base64>` secret (the prefix is optional). */
export function decodeSecret(secret: string): Uint8Array {
  if (typeof secret !== "string") throw new InvalidSecretError("a signing secret must be a string");
  const encoded = secret.trim().replace(/^whsec_/, "");
  const key = decodeBase64(encoded);
  if (key === null) {
    throw new InvalidSecretError(
      `a signing secret must be '${SECRET_PREFIX}' followed by standard base64 ` +
        "(pass several secrets as an array, not one comma-separated string)",
    );
  }
  if (key.length === 0) throw new InvalidSecretError("a signing secret must not be empty");
  return key;
}

const keyCache = new Map<string, Promise<CryptoKey>>();

async function importKeys(secrets: readonly string[]): Promise<CryptoKey[]> {
  if (secrets.length === 0) throw new InvalidSecretError("at least one signing secret is required");
  return Promise.all(
    secrets.map((secret) => {
      let key = keyCache.get(secret);
      if (key === undefined) {
        const raw = decodeSecret(secret);
        key = subtleCrypto().then((subtle) =>
          subtle.importKey("raw", raw as BufferSource, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]),
        );
        if (keyCache.size > 64) keyCache.clear();
        keyCache.set(secret, key);
      }
      return key;
    }),
  );
}

async function subtleCrypto(): Promise<SubtleCrypto> {
  // Node 19+, Deno, Bun, browsers and edge runtimes have it globally; Node 18 under node:crypto.
  if (globalThis.crypto?.subtle) return globalThis.crypto.subtle;
  const { webcrypto } = await import("node:crypto");
  return webcrypto.subtle as SubtleCrypto;
}

export function header(headers: HeadersLike, name: string): string | undefined {
  if (typeof (headers as Headers).get === "function") {
    return (headers as Headers).get(name) ?? undefined;
  }
  const entries: Iterable<[string, unknown]> =
    Symbol.iterator in (headers as object)
      ? (headers as Iterable<[string, string]>)
      : Object.entries(headers as Record<string, unknown>);
  for (const [key, value] of entries) {
    if (key.toLowerCase() !== name) continue;
    if (Array.isArray(value)) return value.join(" ");
    return typeof value === "string" ? value : undefined;
  }
  return undefined;
}

function decodeBase64(text: string): Uint8Array | null {
  const padded = text + "=".repeat((4 - (text.length % 4)) % 4);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(padded)) return null;
  try {
    const binary = atob(padded);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes;
  } catch {
    return null;
  }
}

function concat(first: Uint8Array, second: Uint8Array): Uint8Array {
  const joined = new Uint8Array(first.length + second.length);
  joined.set(first, 0);
  joined.set(second, first.length);
  return joined;
}

function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  // Look at every byte whatever the differences, so timing says nothing about them.
  let difference = a.length ^ b.length;
  for (let i = 0; i < a.length; i += 1) difference |= (a[i] ?? 0) ^ (b[i % (b.length || 1)] ?? 0);
  return difference === 0;
}
