"""Run the benchmark suite.

Usage: ``python -m bench.run [--db sqlite|postgres|both] [--only W1,W3] [--quick] [--peers]``.

Per database, RAW is measured first (Baton's own HTTP client stack straight to
the handler), then each workload runs against a fresh Baton server on a fresh
database. With ``--peers`` (``make bench`` sets it), BullMQ, Celery and DBOS
run W1 and W3 (BullMQ also J1) next, in the same run, installed first into
``bench/.peers/`` if they are not there yet. Each run prints a table per
database and, with the peers, the side-by-side tables (every row as a ratio
to BullMQ), saves markdown and JSON under ``bench/results/``, and rewrites the
last-run section of ``bench/README.md``.
Every child process and every database made here is removed on the way out,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import compare
from bench import workloads as wl
from bench.peers import install, suite
from bench.processes import (
    ROOT,
    cleanup_on_exit,
    database,
    free_port,
    peak_rss_bytes,
    spawn,
    stop,
    tail,
)
from bench.tables import fmt, markdown_table, text_table, verdict

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
README = BENCH / "README.md"
BEGIN_MARK = "<!-- bench:last-run:begin -->"
END_MARK = "<!-- bench:last-run:end -->"
BIN = Path(sys.executable).parent

#: Each workload gets at most this long (W4 more: it is ten times W2).
WORKLOAD_LIMIT = 180.0
W4_LIMIT = 240.0
#: Starting a server (migrations included) gets at most this long.
START_LIMIT = 60.0
PROFILE_SECONDS = 10

#: Every workload name ``--only`` takes; Baton runs those in RUNNERS, the peers theirs.
WORKLOADS = ("W1", "W1B", "W2", "W3", "W4", "J1")
MB = 1024 * 1024


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def uvicorn_argv(target: str, port: int) -> list[str]:
    script = BIN / "uvicorn"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "uvicorn"]
    return [
        *base,
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_LIMIT
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url} exited with {proc.returncode}:\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {START_LIMIT:g} s:\n{tail(log)}")


@contextlib.asynccontextmanager
async def handler_process(tmp: Path) -> Any:
    port = free_port()
    argv = uvicorn_argv("bench.handler:app", port)
    if _have("uvloop"):
        argv += ["--loop", "uvloop"]
    if _have("httptools"):
        argv += ["--http", "httptools"]
    log = tmp / "handler.log"
    proc = spawn(argv, dict(os.environ), log)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/stats", proc, log)
        yield wl.Handler(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    api: wl.BatonApi
    log: Path


@contextlib.asynccontextmanager
async def baton_server(database_url: str, tmp: Path, label: str) -> Any:
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=tmp))
    api_key = secrets.token_urlsafe(24)
    env = dict(os.environ)
    env.update(
        BATON_DATABASE_URL=database_url.replace("{data}", str(data_dir)),
        BATON_DATA_DIR=str(data_dir),
        BATON_API_KEYS=api_key,
        BATON_SIGNING_SECRETS="whsec_" + base64.b64encode(os.urandom(32)).decode(),
        BATON_ALLOW_PRIVATE_NETWORKS="true",
        BATON_LOG_LEVEL="warning",
        BATON_PUBLIC_URL=f"http://127.0.0.1:{port}",
        BATON_SHUTDOWN_GRACE="2",
    )
    log = tmp / f"{label}.log"
    proc = spawn(uvicorn_argv("app.main:app", port), env, log)
    api = wl.BatonApi(f"http://127.0.0.1:{port}", api_key)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log)
        yield Server(proc, api, log)
    finally:
        await api.aclose()
        stop(proc)


# --------------------------------------------------------------------------- profile


def summarize_profile(raw: Path, top: int = 10) -> dict[str, Any]:
    """Top functions in app/ and tortoise/ by inclusive samples, from py-spy's raw output.

    Shares are of the event loop thread's samples (the stacks that start at
    uvicorn's entry point); samples of other threads (aiosqlite's worker, the
    resolver pool) are counted apart. ``innermost`` counts the samples where the
    function is the deepest app/ or tortoise/ frame: its own time plus that of
    the libraries it calls. ``by_entry`` attributes each sample to its outermost
    app/ frame, which splits the loop's time by activity (API requests, claiming,
    sending, settling answers).
    """
    inclusive: Counter[str] = Counter()
    innermost: Counter[str] = Counter()
    outermost: Counter[str] = Counter()
    loop_samples = other_samples = 0
    frame_re = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if not frames[0].startswith("<module>"):
            other_samples += count
            continue
        loop_samples += count
        seen: list[str] = []
        for frame in frames:
            match = frame_re.match(frame.strip())
            if not match or not re.search(r"(^|/)(app|tortoise)/", match["file"]):
                continue
            short = re.sub(r"^.*?(?=(app|tortoise)/)", "", match["file"])
            key = f"{match['func']} ({short})"
            if key not in seen:
                seen.append(key)
                inclusive[key] += count
        if seen:
            innermost[seen[-1]] += count
        entry = next((k for k in seen if "(app/" in k), "(no app/ frame: event loop, I/O)")
        outermost[entry] += count

    def share(n: int) -> float:
        return 100 * n / loop_samples if loop_samples else math.nan

    return {
        "event_loop_samples": loop_samples,
        "other_thread_samples": other_samples,
        "top": [
            {
                "function": key,
                "inclusive_percent": share(n),
                "innermost_percent": share(innermost[key]),
            }
            for key, n in inclusive.most_common(top)
        ],
        "top_innermost": [
            {"function": key, "innermost_percent": share(n)}
            for key, n in innermost.most_common(top)
        ],
        "by_entry": [
            {"function": key, "percent": share(n)} for key, n in outermost.most_common(top)
        ],
    }


async def profile_w1(
    kind: str, handler: wl.Handler, sizes: wl.Sizes, tmp: Path, stamp: str
) -> dict[str, Any]:
    """Run W1 again under py-spy and summarize where the server spends its time."""
    py_spy = BIN / "py-spy"
    if not py_spy.exists():
        return {"error": "py-spy is not installed"}
    async with database(kind, "profile") as url, baton_server(url, tmp, "profile") as server:
        raw = tmp / "w1-profile.txt"
        argv = [str(py_spy), "record", "-p", str(server.proc.pid)]
        argv += ["-d", str(PROFILE_SECONDS), "-f", "raw", "-o", str(raw)]
        spy = spawn(argv, dict(os.environ), tmp / "py-spy.log")
        try:
            await asyncio.sleep(1.0)  # py-spy attaches
            if spy.poll() is not None:
                return {"error": f"py-spy failed: {tail(tmp / 'py-spy.log', 5)}"}
            await handler.reset()
            out = wl.Outcome("W1-profile")
            await wl.run_bounded(out, lambda o: wl.w1(o, server.api, handler, sizes), 120)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(spy.wait, PROFILE_SECONDS + 20)
        finally:
            stop(spy, grace=10)
        if not raw.exists():
            return {"error": f"py-spy wrote nothing: {tail(tmp / 'py-spy.log', 5)}"}
        summary = summarize_profile(raw)
        RESULTS.mkdir(parents=True, exist_ok=True)
        kept = RESULTS / f"{stamp}-w1-profile.txt"
        shutil.copyfile(raw, kept)
        summary["raw_file"] = str(kept.relative_to(ROOT))
        summary["seconds"] = PROFILE_SECONDS
        summary["steps_per_second_under_profiler"] = out.metrics.get("steps_per_second")
        return summary


# --------------------------------------------------------------------------- the run


RunFn = Callable[[wl.Outcome, wl.BatonApi, wl.Handler, wl.Sizes], Awaitable[None]]
RUNNERS: dict[str, RunFn] = {"W1": wl.w1, "W1B": wl.w1b, "W2": wl.w2, "W3": wl.w3, "W4": wl.w4}


def bind(
    run: RunFn, api: wl.BatonApi, handler: wl.Handler, sizes: wl.Sizes
) -> Callable[[wl.Outcome], Awaitable[None]]:
    def body(out: wl.Outcome) -> Awaitable[None]:
        return run(out, api, handler, sizes)

    return body


async def run_database(
    kind: str, only: list[str], sizes: wl.Sizes, handler: wl.Handler, tmp: Path
) -> dict[str, Any]:
    print(f"\n== {kind}", flush=True)
    results: dict[str, Any] = {}
    raw = await wl.run_bounded(wl.Outcome("RAW"), lambda o: wl.raw(o, handler, sizes), 120)
    results["RAW"] = raw.as_dict()
    print(f"   RAW  {raw.status:7} {raw.seconds:6.1f} s  {raw.brief()}", flush=True)
    for name in (w for w in only if w in RUNNERS):
        out = wl.Outcome(name)
        limit = W4_LIMIT if name == "W4" else WORKLOAD_LIMIT
        try:
            async with (
                database(kind, name) as url,
                baton_server(url, tmp, f"{kind}-{name}") as server,
            ):
                await handler.reset()
                body = bind(RUNNERS[name], server.api, handler, sizes)
                await wl.run_bounded(out, body, limit)
                rss = peak_rss_bytes(server.proc.pid)
                out.metrics["server_peak_rss_mb"] = rss / MB if rss is not None else None
                if server.proc.poll() is not None:
                    out.status = "error"
                    out.error = (
                        f"server exited with {server.proc.returncode}: {tail(server.log, 5)}"
                    )
        except Exception as exc:  # set-up failures are reported, not fatal
            out.status = "error"
            out.error = f"{type(exc).__name__}: {exc}"[:500]
        results[name] = out.as_dict()
        print(f"   {name:4} {out.status:7} {out.seconds:6.1f} s  {out.brief()}", flush=True)
    return results


# --------------------------------------------------------------------------- the table


def build_rows(kind: str, res: dict[str, Any]) -> list[list[str]]:
    """The table rows: workload, metric, measured, vs RAW, target, result."""
    rows: list[list[str]] = []
    raw = res.get("RAW", {})
    rm = raw.get("metrics", {})
    c64 = rm.get("c64", {}).get("rps")
    c1 = rm.get("c1", {}).get("mean_ms")
    if raw.get("status") != "ok":
        rows.append(["RAW", raw.get("status", "—"), raw.get("error") or "—", "—", "—", "—"])
    for key, label in (
        ("c64", "Baton client stack, c64"),
        ("c1", "Baton client stack, c1"),
        ("aiohttp_c16", "plain aiohttp, c16"),
    ):
        if key in rm:
            m = rm[key]
            measured = f"{fmt(m['rps'])} req/s, mean {fmt(m['mean_ms'], 2, 'ms')}"
            rows.append(["RAW", label, measured, "—", "—", "—"])

    def failed(name: str, r: dict[str, Any]) -> None:
        rows.append([name, r["status"], (r.get("error") or "").replace("|", "/"), "—", "—", "miss"])

    w1 = res.get("W1")
    if w1:
        m = w1["metrics"]
        if w1["status"] != "ok":
            failed("W1", w1)
        sps = m.get("steps_per_second")
        ratio = sps / c64 if sps and c64 else None
        if kind == "sqlite":
            target = "≥ 1,000 steps/s and ≥ 0.4 × RAW c64"
            ok = None if sps is None or ratio is None else sps >= 1000 and ratio >= 0.4
        else:
            target = "(set for SQLite)"
            ok = None
        n = m.get("workflows")
        rows.append(
            [
                "W1",
                f"{n} diamonds, {m.get('concurrency')} in flight: steps/s",
                fmt(sps),
                f"{fmt(ratio, 2)} × RAW c64" if ratio else "—",
                target,
                verdict(ok if w1["status"] == "ok" else False),
            ]
        )
        rows.append(
            [
                "W1",
                f"all {n} creates answered after",
                fmt(m.get("submit_seconds"), 2, "s"),
                "—",
                "—",
                "—",
            ]
        )
        rows.append(
            [
                "W1",
                "end-to-end latency p50 / p99",
                f"{fmt(m.get('latency_p50_s'), 2)} / {fmt(m.get('latency_p99_s'), 2)} s",
                "—",
                "—",
                "—",
            ]
        )
        rows.append(
            ["W1", "server peak RSS", fmt(m.get("server_peak_rss_mb"), 0, "MB")] + ["—"] * 3
        )

    w1b = res.get("W1B")
    if w1b:
        m = w1b["metrics"]
        if w1b["status"] != "ok":
            failed("W1B", w1b)
        sps = m.get("steps_per_second")
        single = (w1 or {}).get("metrics", {}).get("steps_per_second")
        rows.append(
            [
                "W1B",
                f"W1's {m.get('workflows')} diamonds as one batch: steps/s",
                fmt(sps),
                f"{fmt(sps / single, 2)} × W1 (one create at a time)" if sps and single else "—",
                "—",
                "—",
            ]
        )
        single_submit = (w1 or {}).get("metrics", {}).get("submit_seconds")
        rows.append(
            [
                "W1B",
                f"the batch ({fmt(m.get('body_bytes', 0) / 1024, 0, 'KiB')}) answered after",
                fmt(m.get("submit_seconds"), 2, "s"),
                f"W1's {m.get('workflows')} creates: {fmt(single_submit, 2, 's')}"
                if single_submit
                else "—",
                "—",
                "—",
            ]
        )
        rows.append(
            [
                "W1B",
                "end-to-end latency p50 / p99",
                f"{fmt(m.get('latency_p50_s'), 2)} / {fmt(m.get('latency_p99_s'), 2)} s",
                "—",
                "—",
                "—",
            ]
        )

    w2 = res.get("W2")
    w2_per_step = None
    if w2:
        m = w2["metrics"]
        if w2["status"] != "ok":
            failed("W2", w2)
        wall = m.get("wall_seconds")
        steps = m.get("steps")
        ideal = steps / c64 if steps and c64 else None
        ratio = wall / ideal if wall and ideal else None
        ok = None if ratio is None else ratio <= 2
        w2_per_step = m.get("per_step_ms")
        rows.append(
            [
                "W2",
                f"prepare → {(steps or 2) - 2} parallel → finalize: wall",
                fmt(wall, 2, "s"),
                f"{fmt(ratio, 1)} × ({steps} ÷ RAW c64 = {fmt(ideal, 2, 's')})" if ratio else "—",
                "≤ 2 × (steps ÷ RAW c64)",
                verdict(ok if w2["status"] == "ok" else False),
            ]
        )
        rows.append(["W2", "create accepted", fmt(m.get("accept_seconds"), 2, "s")] + ["—"] * 3)
        rows.append(
            ["W2", "server peak RSS", fmt(m.get("server_peak_rss_mb"), 0, "MB")] + ["—"] * 3
        )

    w3 = res.get("W3")
    if w3:
        m = w3["metrics"]
        if w3["status"] != "ok":
            failed("W3", w3)
        mean = m.get("hop_mean_ms")
        over = mean - c1 if mean is not None and c1 is not None else None
        ok = None if over is None else over <= 2
        rows.append(
            [
                "W3",
                f"chain of {m.get('steps')}: hop mean / p50 / p99",
                f"{fmt(mean, 2)} / {fmt(m.get('hop_p50_ms'), 2)} / "
                f"{fmt(m.get('hop_p99_ms'), 2)} ms",
                f"RAW c1 + {fmt(over, 2, 'ms')}" if over is not None else "—",
                f"≤ RAW c1 + 2 ms ({fmt(c1 + 2 if c1 else None, 2, 'ms')})",
                verdict(ok if w3["status"] == "ok" else False),
            ]
        )
        rows.append(
            [
                "W3",
                "wall / first hop (create sent → step 1 arrives)",
                f"{fmt(m.get('wall_seconds'), 2, 's')} / {fmt(m.get('first_hop_ms'), 1, 'ms')}",
            ]
            + ["—"] * 3
        )

    w4 = res.get("W4")
    if w4:
        m = w4["metrics"]
        if w4["status"] != "ok":
            failed("W4", w4)
        accept = m.get("accept_seconds")
        rows.append(
            [
                "W4",
                f"{m.get('steps')} parallel steps: create accepted",
                fmt(accept, 2, "s"),
                "—",
                "< 2 s",
                verdict(None if accept is None else accept < 2),
            ]
        )
        finished = w4["status"] == "ok"
        rows.append(
            [
                "W4",
                "wall to completion",
                fmt(m.get("wall_seconds"), 1, "s") if finished else w4["status"],
                "—",
                "finished",
                verdict(finished),
            ]
        )
        rss = m.get("server_peak_rss_mb")
        rows.append(
            [
                "W4",
                "server peak RSS",
                fmt(rss, 0, "MB"),
                "—",
                "< 300 MB",
                verdict(None if rss is None else rss < 300),
            ]
        )
        per_step = m.get("per_step_ms")
        ratio = per_step / w2_per_step if per_step and w2_per_step else None
        rows.append(
            [
                "W4",
                "per-step time (wall ÷ steps)",
                fmt(per_step, 2, "ms"),
                f"{fmt(ratio, 2)} × W2 per-step ({fmt(w2_per_step, 2, 'ms')})" if ratio else "—",
                "≤ 1.5 × W2 per-step",
                verdict(None if ratio is None else ratio <= 1.5 and finished),
            ]
        )
        rows.append(
            [
                "W4",
                f"GET …/graph of the {m.get('steps')} steps: p50 / max",
                f"{fmt(m.get('graph_p50_ms'), 1)} / {fmt(m.get('graph_max_ms'), 1)} ms",
                f"{fmt(m.get('graph_bytes', 0) / 1024, 0, 'KiB')} answer",
                "—",
                "—",
            ]
        )
    return rows


HEADER = ["workload", "metric", "measured", "vs RAW", "target", "result"]


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_before": load_average(),
    }


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Run {report['date']} on {m['nproc']} × {m['cpu']} (nproc {m['nproc']}), "
        f"Python {m['python']}, Linux {m['kernel']}.",
        "",
        f"Command: `{report['command']}`" + (" (quick sizes)" if report["quick"] else ""),
        "",
        f"Load average (1/5/15 min) before the run {m['load_before']}, "
        f"after {m.get('load_after', 'unknown')}; the benchmark's own processes "
        "(client, handler, Baton) share the machine's cores.",
    ]
    for kind, rows in report["tables"].items():
        lines += [
            "",
            f"### {'SQLite' if kind == 'sqlite' else 'PostgreSQL'}",
            "",
            markdown_table(HEADER, rows),
        ]
    if report.get("side_by_side"):
        lines += [
            "",
            "### Side by side with the peers (ratio to BullMQ)",
            "",
            "Measured in this run, one after another on this machine; what each row "
            "runs and how faithfully: “Peers” in bench/README.md.",
        ]
        for table in report["side_by_side"]:
            lines += ["", f"**{table['title']}**", ""]
            lines.append(markdown_table(table["header"], table["rows"]))
    profile = report.get("profile")
    if profile:
        lines += ["", "### Server profile during W1 (SQLite, py-spy)", ""]
        if "error" in profile:
            lines.append(f"Not available: {profile['error']}")
        else:
            lines += [
                f"py-spy sampled the server for {profile['seconds']} s of a separate W1 run "
                f"({fmt(profile.get('steps_per_second_under_profiler'))} steps/s under the "
                f"profiler): {profile['event_loop_samples']} samples on the event loop thread, "
                f"{profile['other_thread_samples']} on other threads (the SQLite driver's worker). "
                "Functions in `app/` and `tortoise/`, by share of the event loop's samples "
                "(inclusive: on the stack; innermost: the deepest `app/`/`tortoise/` frame, "
                "so its own time plus the libraries it calls):",
                "",
                "| # | function | inclusive | innermost |",
                "|---|---|---|---|",
            ]
            for i, entry in enumerate(profile["top"], 1):
                func = entry["function"].replace("|", "/")
                lines.append(
                    f"| {i} | `{func}` | {entry['inclusive_percent']:.1f} % "
                    f"| {entry['innermost_percent']:.1f} % |"
                )
            lines += ["", "Top by innermost share:", ""]
            lines += ["| # | function | innermost |", "|---|---|---|"]
            for i, entry in enumerate(profile["top_innermost"], 1):
                func = entry["function"].replace("|", "/")
                lines.append(f"| {i} | `{func}` | {entry['innermost_percent']:.1f} % |")
            lines += ["", "Event loop samples by outermost `app/` frame (the activity):", ""]
            lines += ["| # | activity | share |", "|---|---|---|"]
            for i, entry in enumerate(profile["by_entry"], 1):
                func = entry["function"].replace("|", "/")
                lines.append(f"| {i} | `{func}` | {entry['percent']:.1f} % |")
    return "\n".join(lines) + "\n"


def update_readme(block: str) -> None:
    section = f"{BEGIN_MARK}\n{block}{END_MARK}"
    text = README.read_text() if README.exists() else "# Baton benchmarks\n"
    if BEGIN_MARK in text and END_MARK in text:
        head, _, rest = text.partition(BEGIN_MARK)
        _, _, foot = rest.partition(END_MARK)
        text = head + section + foot
    else:
        text = text.rstrip("\n") + "\n\n## Last run\n\n" + section + "\n"
    README.write_text(text)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    sizes = wl.Sizes.quick() if args.quick else wl.Sizes()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    only = [w for w in WORKLOADS if w in args.only] if args.only else list(WORKLOADS)
    now = datetime.now(UTC)
    report: dict[str, Any] = {
        "stamp": now.strftime("%Y%m%d-%H%M%S"),
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": args.command,
        "quick": args.quick,
        "sizes": sizes.__dict__,
        "results": {},
        "tables": {},
    }
    if args.peers:
        report["peers"] = {}
    with tempfile.TemporaryDirectory(prefix="baton-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with handler_process(tmp) as handler:
            for kind in kinds:
                results = await run_database(kind, only, sizes, handler, tmp)
                report["results"][kind] = results
                report["tables"][kind] = build_rows(kind, results)
            if args.peers:
                report["peers"] = await suite.run_peers(kinds, only, sizes, handler, tmp)
                tables = compare.side_by_side(report["results"], report["peers"], sizes.__dict__)
                report["side_by_side"] = [t.as_dict() for t in tables]
            if args.profile and "sqlite" in kinds and "W1" in only:
                print("\n== profile: W1 on SQLite under py-spy", flush=True)
                try:
                    report["profile"] = await profile_w1(
                        "sqlite", handler, sizes, tmp, report["stamp"]
                    )
                except Exception as exc:  # a failed profile must not lose the run
                    report["profile"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    report["machine"]["load_after"] = load_average()
    return report


def save(report: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = report["stamp"]
    markdown = render_markdown(report)
    (RESULTS / f"{stamp}.md").write_text(markdown)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    shutil.copyfile(RESULTS / f"{stamp}.md", RESULTS / "latest.md")
    shutil.copyfile(RESULTS / f"{stamp}.json", RESULTS / "latest.json")
    update_readme(markdown)
    return RESULTS / f"{stamp}.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--only",
        type=lambda s: [w.strip().upper() for w in s.split(",") if w.strip()],
        help="comma-separated workloads (W1,W2,W3,W4,J1); RAW always runs",
    )
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also run BullMQ, Celery and DBOS (installed into bench/.peers/ when missing) "
        "and print the side-by-side tables; make bench sets it, --no-peers skips them",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for iterating")
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the py-spy profile of the server during W1 on SQLite",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only or []) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    args.command = "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.command = args.command.rstrip()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peers:
        try:
            install.ensure()
        except install.InstallError as exc:
            print(f"error: the peers could not be installed: {exc}", file=sys.stderr)
            return 1
    with cleanup_on_exit():
        try:
            factory = None
            if _have("uvloop"):
                import uvloop

                # The server runs on uvloop (uvicorn picks it), so RAW does too.
                factory = uvloop.new_event_loop
            with asyncio.Runner(loop_factory=factory) as runner:
                report = runner.run(amain(args))
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
            return 130
    for kind, rows in report["tables"].items():
        print(f"\n{'SQLite' if kind == 'sqlite' else 'PostgreSQL'}\n{text_table(HEADER, rows)}")
    for table in report.get("side_by_side", []):
        print(f"\n{table['title']}\n{text_table(table['header'], table['rows'])}")
    profile = report.get("profile")
    if profile and "top" in profile:
        print("\nW1 server profile (inclusive, app/ and tortoise/):")
        for entry in profile["top"]:
            inclusive, inner = entry["inclusive_percent"], entry["innermost_percent"]
            print(f"  {inclusive:5.1f} % ({inner:4.1f} % innermost)  {entry['function']}")
    elif profile:
        print(f"\nprofile: {profile.get('error')}")
    path = save(report)
    print(f"\nsaved {path.relative_to(ROOT)} (+ .json) and updated {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
