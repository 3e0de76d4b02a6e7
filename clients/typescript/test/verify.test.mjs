// verifyRequest and verifySignature against requests captured from a real Baton server
// (fixtures/baton.json, made by scripts/capture_fixtures.py) and against the
// `standardwebhooks` reference library.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { Webhook } from "standardwebhooks";

import {
  InvalidSecretError,
  decodeSecret,
  verifyRequest,
  verifySignature,
} from "../dist/index.js";

const fixtures = JSON.parse(readFileSync(new URL("./fixtures/baton.json", import.meta.url)));
const [SECRET, OTHER] = fixtures.secrets;
const STRANGER = "whsec_" + Buffer.from("k".repeat(32)).toString("base64");

function requestOf(captured, { body = captured.body, headers = captured.headers } = {}) {
  return new Request(`http://handler.test${captured.path}`, { method: "POST", headers, body });
}

function signedAt(captured) {
  return Number(captured.headers["webhook-timestamp"]);
}

describe("requests captured from a Baton server", () => {
  test("cover every kind of request", () => {
    const kinds = new Set(fixtures.requests.map((r) => r.headers["baton-kind"]));
    assert.deepEqual([...kinds].sort(), ["compensation", "on_complete", "on_error", "step"]);
    for (const captured of fixtures.requests) {
      assert.equal(captured.headers["webhook-signature"].split(" ").length, 2, "two secrets sign");
    }
  });

  for (const captured of fixtures.requests) {
    test(`${captured.name} (${captured.headers["baton-kind"]}) verifies with either secret`, async () => {
      const now = signedAt(captured);
      assert.equal(await verifyRequest(requestOf(captured), SECRET, { now }), true);
      assert.equal(await verifyRequest(requestOf(captured), [OTHER], { now }), true);
      assert.equal(await verifyRequest(requestOf(captured), [STRANGER, SECRET], { now }), true);
    });

    test(`${captured.name} is refused when anything differs`, async () => {
      const now = signedAt(captured);
      const tampered = captured.body.replace("order_123", "order_124");
      assert.notEqual(tampered, captured.body);
      const cases = [
        [requestOf(captured), STRANGER, now],
        [requestOf(captured, { body: tampered }), SECRET, now],
        [requestOf(captured), SECRET, now + 301],
        [requestOf(captured), SECRET, now - 301],
        [requestOf(captured, { headers: { ...captured.headers, "webhook-id": "msg_other" } }), SECRET, now],
      ];
      for (const [request, secret, at] of cases) {
        assert.equal(await verifyRequest(request, secret, { now: at }), false);
      }
    });
  }

  test("the body can still be read after verifying", async () => {
    const captured = fixtures.requests[0];
    const request = requestOf(captured);
    assert.equal(await verifyRequest(request, SECRET, { now: signedAt(captured) }), true);
    assert.equal(request.bodyUsed, false);
    const body = await request.json();
    assert.equal(body.workflowId, "fixture-saga");
    assert.equal(body.context.customer, "Zoë", "non-ASCII bytes are signed as sent");
  });

  test("the reference library verifies them too, and refuses them with another secret", (t) => {
    for (const captured of fixtures.requests) {
      // standardwebhooks reads the clock itself: set it to when the request was signed.
      t.mock.timers.enable({ apis: ["Date"], now: signedAt(captured) * 1000 });
      const body = new Webhook(OTHER).verify(captured.body, captured.headers);
      assert.equal(body.workflowId, JSON.parse(captured.body).workflowId);
      assert.throws(() => new Webhook(STRANGER).verify(captured.body, captured.headers));
      t.mock.timers.reset();
    }
  });
});

describe("signatures made now", () => {
  const body = JSON.stringify({ workflowId: "wf_1", stepId: "a", note: "📦" });

  test("made by standardwebhooks verify", async () => {
    const id = "msg_ts";
    const now = new Date();
    const signature = new Webhook(SECRET).sign(id, now, body);
    const headers = {
      "webhook-id": id,
      "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
      "webhook-signature": signature,
    };
    assert.equal(await verifySignature(body, headers, SECRET), true);
    assert.equal(await verifySignature(new TextEncoder().encode(body), new Headers(headers), [SECRET]), true);
    assert.equal(await verifySignature(body, headers, OTHER), false);
  });

  test("headers are read whatever their case, from any shape", async () => {
    const captured = fixtures.requests[0];
    const now = signedAt(captured);
    const upper = Object.fromEntries(
      Object.entries(captured.headers).map(([k, v]) => [k.toUpperCase(), v]),
    );
    const arrays = Object.fromEntries(Object.entries(captured.headers).map(([k, v]) => [k, [v]]));
    assert.equal(await verifySignature(captured.body, upper, SECRET, { now }), true);
    assert.equal(await verifySignature(captured.body, arrays, SECRET, { now }), true);
    assert.equal(
      await verifySignature(captured.body, Object.entries(captured.headers), SECRET, { now }),
      true,
    );
  });

  test("missing or malformed headers are refused, not thrown", async () => {
    const captured = fixtures.requests[0];
    const now = signedAt(captured);
    for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
      const headers = { ...captured.headers };
      delete headers[name];
      assert.equal(await verifySignature(captured.body, headers, SECRET, { now }), false);
    }
    for (const [name, value] of [
      ["webhook-timestamp", "+1"],
      ["webhook-timestamp", "12.5"],
      ["webhook-signature", "v1,***"],
      ["webhook-signature", "v2,abc"],
      ["webhook-signature", ""],
    ]) {
      const headers = { ...captured.headers, [name]: value };
      assert.equal(await verifySignature(captured.body, headers, SECRET, { now }), false);
    }
  });

  test("a tolerance can be set", async () => {
    const captured = fixtures.requests[0];
    const late = signedAt(captured) + 3600;
    assert.equal(await verifySignature(captured.body, captured.headers, SECRET, { now: late }), false);
    assert.equal(
      await verifySignature(captured.body, captured.headers, SECRET, { now: late, tolerance: 7200 }),
      true,
    );
  });

  test("a malformed secret is a configuration error", async () => {
    await assert.rejects(verifySignature(body, {}, "whsec_***"), InvalidSecretError);
    await assert.rejects(verifySignature(body, {}, []), InvalidSecretError);
    assert.throws(() => decodeSecret("whsec_"), /must not be empty/);
    assert.equal(decodeSecret(` ${SECRET.slice(6)}\n`).length, 32, "prefix and whitespace optional");
  });
});
