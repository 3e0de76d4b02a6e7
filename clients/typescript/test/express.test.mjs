// batonMiddleware in a real Express app, with requests captured from a Baton server.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import express from "express";

import { batonMiddleware } from "../dist/index.js";

const fixtures = JSON.parse(readFileSync(new URL("./fixtures/baton.json", import.meta.url)));
const [SECRET] = fixtures.secrets;
const captured = fixtures.requests[0];
const now = Number(captured.headers["webhook-timestamp"]);

describe("batonMiddleware", () => {
  let server;
  let base;
  const seen = [];

  before(async () => {
    const app = express();
    const answer = (req, res) => {
      seen.push(req.body);
      res.json({ success: true, result: { seen: req.body.stepId, raw: req.rawBody.length } });
    };
    app.post("/steps/:name", batonMiddleware(SECRET, { now }), answer);
    app.post("/raw/:name", express.raw({ type: "*/*" }), batonMiddleware([SECRET], { now }), answer);
    app.post("/parsed/:name", express.json(), batonMiddleware(SECRET, { now }), answer);
    app.use((error, req, res, next) => res.status(500).json({ error: error.message }));
    await new Promise((resolve) => {
      server = app.listen(0, "127.0.0.1", resolve);
    });
    base = `http://127.0.0.1:${server.address().port}`;
  });

  after(() => new Promise((resolve) => server.close(resolve)));

  const post = (path, body, headers) =>
    fetch(base + path, { method: "POST", headers, body });

  for (const path of ["/steps/validate", "/raw/validate"]) {
    test(`passes a genuine request on, parsed (${path})`, async () => {
      const response = await post(path, captured.body, captured.headers);
      assert.equal(response.status, 200);
      const answer = await response.json();
      assert.equal(answer.result.seen, "validate");
      assert.equal(answer.result.raw, new TextEncoder().encode(captured.body).length);
      assert.equal(seen.at(-1).workflowId, "fixture-saga");
    });
  }

  test("answers 401 to anything else", async () => {
    const tampered = await post("/steps/validate", captured.body.replace("Zoë", "Zoe"), captured.headers);
    assert.equal(tampered.status, 401);
    assert.deepEqual(await tampered.json(), { error: "invalid signature" });
    const unsigned = await post("/steps/validate", captured.body, { "content-type": "application/json" });
    assert.equal(unsigned.status, 401);
  });

  test("says so when a JSON parser already took the body", async () => {
    const response = await post("/parsed/validate", captured.body, captured.headers);
    assert.equal(response.status, 500);
    assert.match((await response.json()).error, /raw body/);
  });
});
