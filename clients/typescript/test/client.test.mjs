// BatonClient with a fake fetch that answers what a real Baton server answered
// (fixtures/baton.json) and records what the client sent.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { BatonClient, ProblemError, WaitTimeoutError } from "../dist/index.js";

const fixtures = JSON.parse(readFileSync(new URL("./fixtures/baton.json", import.meta.url)));
const answers = fixtures.answers;

function fakeServer(...scripted) {
  const sent = [];
  const fetch = async (url, init) => {
    sent.push({ url, ...init, json: init.body ? JSON.parse(init.body) : undefined });
    const next = scripted.length > 1 ? scripted.shift() : scripted[0];
    const type = next.status >= 400 ? "application/problem+json" : "application/json";
    return new Response(JSON.stringify(next.body), { status: next.status, headers: { "content-type": type } });
  };
  return { sent, client: new BatonClient({ baseUrl: "http://baton.test/", apiKey: "bk_ts", fetch }) };
}

describe("BatonClient", () => {
  test("create sends the body, the key and an idempotency key", async () => {
    const { sent, client } = fakeServer(answers.created);
    const body = { id: "fixture-saga", steps: [{ id: "a", url: "https://x.example" }] };
    const doc = await client.workflows.create(body, { idempotencyKey: "k1" });
    assert.equal(doc.id, "fixture-saga");
    assert.equal(doc.status, "running");
    const [request] = sent;
    assert.equal(request.method, "POST");
    assert.equal(request.url, "http://baton.test/v1/workflows");
    assert.equal(request.headers.Authorization, "Bearer bk_ts");
    assert.equal(request.headers["Idempotency-Key"], "k1");
    assert.deepEqual(request.json, body);
  });

  test("get, cancel and retry use the contract's paths", async () => {
    const { sent, client } = fakeServer(answers.completed, answers.completed, answers.retried, answers.retried);
    await client.workflows.get("a b/c");
    await client.workflows.cancel("wf", { compensate: true });
    await client.workflows.retry("wf");
    const doc = await client.workflows.retry("fixture-done", { stepId: "only" });
    assert.equal(doc.status, "running");
    assert.deepEqual(
      sent.map((r) => [r.method, r.url.replace("http://baton.test", ""), r.json]),
      [
        ["GET", "/v1/workflows/a%20b%2Fc", undefined],
        ["POST", "/v1/workflows/wf/cancel", { compensate: true }],
        ["POST", "/v1/workflows/wf/retry", undefined],
        ["POST", "/v1/workflows/fixture-done/steps/only/retry", undefined],
      ],
    );
  });

  test("wait resolves with the final document", async () => {
    const { sent, client } = fakeServer(answers.created, answers.created, answers.compensated);
    const doc = await client.workflows.wait("fixture-saga", { pollIntervalMs: 10 });
    assert.equal(doc.status, "compensated");
    assert.equal(doc.steps.find((s) => s.id === "charge").compensationStatus, "completed");
    assert.equal(sent.length, 3);
  });

  test("wait gives up with the last document", async () => {
    const { client } = fakeServer(answers.created);
    await assert.rejects(client.workflows.wait("fixture-saga", { timeoutMs: 50, pollIntervalMs: 10 }), (error) => {
      assert.ok(error instanceof WaitTimeoutError);
      assert.equal(error.workflow.status, "running");
      return true;
    });
  });

  test("problem documents become ProblemError", async () => {
    for (const [name, status] of [["notFound", 404], ["invalid", 422], ["conflict", 409]]) {
      const { client } = fakeServer(answers[name]);
      await assert.rejects(client.workflows.get("x"), (error) => {
        assert.ok(error instanceof ProblemError);
        assert.equal(error.status, status);
        assert.equal(error.title, answers[name].body.title);
        assert.equal(error.detail, answers[name].body.detail);
        assert.deepEqual(error.errors, answers[name].body.errors);
        assert.equal(error.type, answers[name].body.type);
        return true;
      });
    }
    const { client } = fakeServer(answers.invalid);
    await assert.rejects(client.workflows.create({ steps: [] }), /422 Unprocessable Content: .*steps\[0\]/);
  });

  test("an error without a problem document", async () => {
    const fetch = async () => new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" });
    const client = new BatonClient({ baseUrl: "http://baton.test", apiKey: "k", fetch });
    await assert.rejects(client.workflows.get("x"), (error) => {
      assert.equal(error.status, 502);
      assert.equal(error.title, "Bad Gateway");
      assert.match(error.detail, /bad gateway/);
      return true;
    });
  });
});
