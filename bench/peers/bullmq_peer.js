'use strict';
/**
 * The BullMQ peer of Baton's benchmark: W1 and W3 with FlowProducer, J1 on a plain queue.
 *
 * Jobs do no I/O (no HTTP per step): a processor returns at once, which is how
 * BullMQ users run work, and so the floor Baton is compared with.
 *
 *   node bench/peers/bullmq_peer.js worker --queue Q [--concurrency 64]
 *   node bench/peers/bullmq_peer.js w1 --queue Q [--workflows 500] [--in-flight 64]
 *   node bench/peers/bullmq_peer.js w3 --queue Q [--steps 100]
 *   node bench/peers/bullmq_peer.js j1 --queue Q [--jobs 10000] [--batch 500] [--concurrency 50]
 *   node bench/peers/bullmq_peer.js clean
 *
 * Common options: --redis URL (default redis://127.0.0.1:6379/12) and
 * --prefix P (default baton-bench-bullmq): every key made here starts with P,
 * and `clean` deletes exactly those keys (SCAN + UNLINK in that database).
 *
 * `worker` serves W1 and W3 until SIGTERM; w1, w3 and j1 print one JSON
 * object on stdout (the metrics, named as bench/workloads.py names Baton's)
 * and exit 0, or print the error on stderr and exit 1.
 *
 * W1, a diamond start -> (a, b) -> merge: a flow is a tree (a job has at most
 * one parent), so no static flow can make `start` the single parent-side
 * dependency of both `a` and `b`. Each diamond is added as the one-job flow
 * `start`; its processor adds the flow `merge` <- [a, b] (children run first,
 * the parent when both are done) carrying start's result to a and b, with
 * fixed job ids so that a retried `start` adds nothing twice. `merge` reads
 * its children's results (getChildrenValues) as a real merge would.
 *
 * W3, a chain of N: one flow N deep (step n is the only child of step n+1);
 * each step reads its child's result. A processor returns the times it
 * started and ended, and the hop is start(n+1) - end(n), the same measure as
 * Baton's handler-answer -> next-arrival.
 *
 * J1: N jobs added with addBulk in batches, then a Worker at concurrency C
 * with an empty processor drains them: jobs/s over the drain, and per job the
 * time from its 'active' event (claimed: moved to active and handed to this
 * worker) to its 'completed' event (moveToCompleted answered by Redis).
 */

const path = require('node:path');
const { createRequire } = require('node:module');
const { parseArgs } = require('node:util');

// The packages live in bench/.peers/node (npm ci of bench/peers/package-lock.json).
const requirePeer = createRequire(path.resolve(__dirname, '..', '.peers', 'node', 'package.json'));
const { FlowProducer, Queue, Worker, Job } = requirePeer('bullmq');
const IORedis = requirePeer('ioredis');

const POLL_MS = 50;
const now = () => performance.timeOrigin + performance.now(); // wall clock, ms, sub-ms precision

const { positionals, values: opts } = parseArgs({
  allowPositionals: true,
  options: {
    redis: { type: 'string', default: 'redis://127.0.0.1:6379/12' },
    prefix: { type: 'string', default: 'baton-bench-bullmq' },
    queue: { type: 'string', default: 'steps' },
    concurrency: { type: 'string' },
    workflows: { type: 'string', default: '500' },
    'in-flight': { type: 'string', default: '64' },
    steps: { type: 'string', default: '100' },
    jobs: { type: 'string', default: '10000' },
    batch: { type: 'string', default: '500' },
  },
});

function connection() {
  // Workers block on Redis: BullMQ asks for maxRetriesPerRequest null.
  return new IORedis(opts.redis, { maxRetriesPerRequest: null });
}

function percentile(values, p) {
  if (values.length === 0) return null;
  const ordered = [...values].sort((x, y) => x - y);
  const rank = Math.max(1, Math.ceil((p / 100) * ordered.length));
  return ordered[Math.min(rank, ordered.length) - 1];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Run `task(i)` for i < n with at most `limit` running at once. */
async function bounded(n, limit, task) {
  let next = 0;
  const lane = async () => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, lane));
}

/** Wait until `completed` jobs are done; fail at once if one failed. */
async function waitCompleted(queue, completed) {
  for (;;) {
    const counts = await queue.getJobCounts('completed', 'failed');
    if (counts.failed > 0) throw new Error(`${counts.failed} jobs failed`);
    if (counts.completed >= completed) return;
    await sleep(POLL_MS);
  }
}

/** Wait until a worker is connected to `queue` (it registers under the queue's name). */
async function waitWorker(queue) {
  const deadline = Date.now() + 30000;
  while ((await queue.getWorkersCount()) < 1) {
    if (Date.now() > deadline) throw new Error('no worker connected within 30 s');
    await sleep(POLL_MS);
  }
}

// ------------------------------------------------------------------ worker (W1, W3)

async function serve() {
  const flows = new FlowProducer({ connection: connection(), prefix: opts.prefix });
  const answer = { ok: true, n: 1 };

  async function processor(job) {
    const started = now();
    const data = job.data;
    const previous = data.reads ? await job.getChildrenValues() : data.previous;
    if (data.diamond) {
      const result = { ...answer, previous };
      const id = data.diamond;
      const child = (name) => ({
        name,
        queueName: job.queueName,
        data: { previous: result },
        opts: { jobId: `${id}-${name}` },
      });
      await flows.add({
        name: 'merge',
        queueName: job.queueName,
        data: { reads: true },
        opts: { jobId: `${id}-merge` },
        children: [child('a'), child('b')],
      });
      return result;
    }
    return { ...answer, started, ended: now() };
  }

  const concurrency = Number(opts.concurrency ?? 64);
  const worker = new Worker(opts.queue, processor, {
    connection: connection(),
    prefix: opts.prefix,
    concurrency,
  });
  worker.on('error', (err) => console.error(`worker error: ${err.message}`));
  const stop = async () => {
    await worker.close();
    await flows.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await worker.waitUntilReady();
  console.error(`bullmq worker on ${opts.queue}, concurrency ${concurrency}`);
}

// ------------------------------------------------------------------ W1

async function w1(queue, flows) {
  const n = Number(opts.workflows);
  const inFlight = Number(opts['in-flight']);
  const sent = new Map();
  const first = Date.now();
  await bounded(n, inFlight, async (i) => {
    const id = `w1-${String(i).padStart(5, '0')}`;
    sent.set(id, Date.now());
    await flows.add({
      name: 'start',
      queueName: opts.queue,
      data: { diamond: id },
      opts: { jobId: `${id}-start` },
    });
  });
  const submitSeconds = (Date.now() - first) / 1000;
  await waitCompleted(queue, 4 * n);
  const detectedSeconds = (Date.now() - first) / 1000;
  const ids = [...sent.keys()];
  const merges = await Promise.all(ids.map((id) => Job.fromId(queue, `${id}-merge`)));
  const latencies = merges.map((job, i) => (job.finishedOn - sent.get(ids[i])) / 1000);
  const last = Math.max(...merges.map((job) => job.finishedOn));
  const wall = (last - first) / 1000;
  return {
    workflows: n,
    steps: 4 * n,
    concurrency: inFlight,
    completed: merges.length,
    submit_seconds: submitSeconds,
    detected_seconds: detectedSeconds,
    wall_seconds: wall,
    steps_per_second: (4 * n) / wall,
    latency_p50_s: percentile(latencies, 50),
    latency_p99_s: percentile(latencies, 99),
    latency_max_s: Math.max(...latencies),
  };
}

// ------------------------------------------------------------------ W3

async function w3(queue, flows) {
  const n = Number(opts.steps);
  const ids = Array.from({ length: n }, (_, i) => `c${String(i).padStart(4, '0')}`);
  let tree = null;
  for (const id of ids) {
    tree = {
      name: id,
      queueName: opts.queue,
      data: { reads: tree !== null },
      opts: { jobId: `w3-${id}` },
      ...(tree ? { children: [tree] } : {}),
    };
  }
  const sent = now();
  await flows.add(tree);
  await waitCompleted(queue, n);
  const jobs = await Promise.all(ids.map((id) => Job.fromId(queue, `w3-${id}`)));
  const values = jobs.map((job) => job.returnvalue);
  const hops = [];
  for (let i = 0; i + 1 < n; i++) hops.push(values[i + 1].started - values[i].ended);
  const mean = hops.reduce((s, h) => s + h, 0) / hops.length;
  return {
    steps: n,
    hops: hops.length,
    hop_mean_ms: mean,
    hop_p50_ms: percentile(hops, 50),
    hop_p99_ms: percentile(hops, 99),
    hop_max_ms: Math.max(...hops),
    first_hop_ms: values[0].started - sent,
    wall_seconds: (jobs[n - 1].finishedOn - sent) / 1000,
  };
}

// ------------------------------------------------------------------ J1

async function j1() {
  const n = Number(opts.jobs);
  const batch = Number(opts.batch);
  const concurrency = Number(opts.concurrency ?? 50);
  const queue = new Queue(opts.queue, { connection: connection(), prefix: opts.prefix });
  const began = now();
  for (let i = 0; i < n; i += batch) {
    const size = Math.min(batch, n - i);
    await queue.addBulk(
      Array.from({ length: size }, (_, k) => ({ name: 'job', data: { n: i + k } })),
    );
  }
  const enqueueSeconds = (now() - began) / 1000;

  const claimed = new Map();
  const latencies = [];
  let last = 0;
  let failed = 0;
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });
  const worker = new Worker(opts.queue, async () => undefined, {
    connection: connection(),
    prefix: opts.prefix,
    concurrency,
    autorun: false,
  });
  worker.on('active', (job) => claimed.set(job.id, now()));
  worker.on('completed', (job) => {
    last = now();
    latencies.push(last - claimed.get(job.id));
    claimed.delete(job.id);
    if (latencies.length === n) resolveDone();
  });
  worker.on('failed', () => {
    failed += 1;
  });
  await worker.waitUntilReady();
  const started = now();
  worker.run().catch((err) => console.error(`worker stopped: ${err.message}`));
  await done;
  await worker.close();
  await queue.close();
  if (failed > 0) throw new Error(`${failed} jobs failed`);
  const drain = (last - started) / 1000;
  return {
    jobs: n,
    batch,
    concurrency,
    enqueue_seconds: enqueueSeconds,
    enqueue_per_second: n / enqueueSeconds,
    drain_seconds: drain,
    jobs_per_second: n / drain,
    latency_p50_ms: percentile(latencies, 50),
    latency_p99_ms: percentile(latencies, 99),
    latency_max_ms: Math.max(...latencies),
  };
}

// ------------------------------------------------------------------ clean

async function clean() {
  const redis = connection();
  let deleted = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${opts.prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  await redis.quit();
  return { deleted };
}

// ------------------------------------------------------------------ main

async function main() {
  const command = positionals[0];
  if (command === 'worker') return serve();
  let result;
  if (command === 'clean') {
    result = await clean();
  } else if (command === 'j1') {
    result = await j1();
  } else if (command === 'w1' || command === 'w3') {
    const queue = new Queue(opts.queue, { connection: connection(), prefix: opts.prefix });
    const flows = new FlowProducer({ connection: connection(), prefix: opts.prefix });
    try {
      await waitWorker(queue);
      result = command === 'w1' ? await w1(queue, flows) : await w3(queue, flows);
    } finally {
      await flows.close();
      await queue.close();
    }
  } else {
    throw new Error(`unknown command ${command}: worker, w1, w3, j1 or clean`);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
