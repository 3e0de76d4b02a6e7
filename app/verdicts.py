"""Deciding `when` conditions away from the event loop, within a time and memory budget.

A condition is small, but what it reads need not be: a 4 KiB expression over a
1 MiB context can build gigabytes (``context.l.map(x, context.s + context.s)``)
or run for seconds, and cel-cpp's iteration budget bounds neither. So the server
never evaluates one itself. ``ConditionEvaluator`` hands each to a worker
process — this module run as ``python -m app.verdicts`` — that evaluates under
an address-space limit (``RLIMIT_AS``), and waits for its answer at most a
wall-time budget. A worker that runs out of memory, crashes or overruns its
time is killed; the step gets a ``condition_error`` and the next evaluation
starts a new worker. The server's memory and event loop are never at stake.

Verdicts are kept (``CACHE_SIZE`` of them) by the condition, the context and
the ancestors' states it reads, so 10,000 sibling steps with the same `when`
over the same context cost one evaluation — and one bomb, not ten thousand.

Frames between the server and its worker are a 4-byte big-endian length and a
JSON document: ``{"source", "context", "steps"}`` one way, ``{"verdict": bool}``
or ``{"error": message}`` (``"memory": true`` when it ran out) the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import resource
import signal
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from app.conditions import (
    ConditionCheck,
    ConditionError,
    Verdict,
    compile_condition,
    failed_verdict,
)

log = logging.getLogger("baton.conditions")

#: Longest one evaluation may take, in seconds, from sending it to its answer.
TIME_BUDGET = 1.0
#: Memory one evaluation may use beyond what the worker needs to run, in bytes.
MEMORY_BUDGET = 256 * 1024 * 1024
#: Verdicts kept, most recently used first.
CACHE_SIZE = 4096
#: How long a stopping worker is given to exit before it is killed.
STOP_SECONDS = 2.0

_HEADER = 4
#: What an attempt answers when the worker died under it.
_DIED = object()
#: Where the ``app`` package lives: the worker imports it from there whatever its cwd.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_CacheKey = tuple[str, bytes, bytes]


class ConditionEvaluator:
    """Decides batches of conditions in a worker process, one at a time, with a cache.

    The worker is started on first use and again after it is killed or dies;
    ``aclose()`` stops it. Safe to share between concurrent sessions.
    """

    def __init__(
        self,
        *,
        time_budget: float = TIME_BUDGET,
        memory_budget: int = MEMORY_BUDGET,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.time_budget = time_budget
        self.memory_budget = memory_budget
        self.cache_size = cache_size
        self._cache: OrderedDict[_CacheKey, Verdict] = OrderedDict()
        self._worker: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        #: What starts a worker; the memory budget (bytes) is added as its argument.
        self.worker_command = [sys.executable, "-m", "app.verdicts"]
        #: Evaluations sent to a worker (cache hits are not), and workers started.
        self.evaluations = 0
        self.workers_started = 0

    async def decide(self, checks: Sequence[ConditionCheck]) -> list[Verdict]:
        """The verdict of each check, in order; never raises for the user's expression."""
        contexts: dict[int, tuple[bytes, bytes]] = {}
        ancestries: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        keyed: list[tuple[_CacheKey, ConditionCheck, bytes, bytes]] = []
        for check in checks:
            # A batch's checks share their workflow's context, and siblings share their
            # ancestors' results (up to 1 MiB each): encode and hash each of them once.
            context = contexts.get(id(check.context))
            if context is None:
                context = contexts[id(check.context)] = _encoded(check.context)
            identity = tuple(
                (step_id, state.get("status"), id(state.get("result")), id(state.get("error")))
                for step_id, state in check.steps.items()
            )
            steps = ancestries.get(identity)
            if steps is None:
                steps = ancestries[identity] = _encoded(check.steps)
            keyed.append(((check.source, context[1], steps[1]), check, context[0], steps[0]))
        answers: dict[_CacheKey, Verdict] = {}
        for key, check, context_json, steps_json in keyed:
            if key not in answers:
                answers[key] = await self._verdict(key, check.source, context_json, steps_json)
        return [answers[key] for key, _, _, _ in keyed]

    async def aclose(self) -> None:
        """Stop the worker (it exits when its input closes; killed if it does not)."""
        async with self._lock:
            await self._stop(kill=False)

    # ----------------------------------------------------------------- internals

    async def _verdict(
        self, key: _CacheKey, source: str, context_json: bytes, steps_json: bytes
    ) -> Verdict:
        cached = self._cached(key)
        if cached is not None:
            return cached
        async with self._lock:
            # Another session may have decided the same while this one waited.
            cached = self._cached(key)
            if cached is not None:
                return cached
            payload = b"".join(
                (
                    b'{"source":',
                    orjson.dumps(source),
                    b',"context":',
                    context_json,
                    b',"steps":',
                    steps_json,
                    b"}",
                )
            )
            verdict = await self._evaluate(payload)
        self._cache[key] = verdict
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return verdict

    def _cached(self, key: _CacheKey) -> Verdict | None:
        verdict = self._cache.get(key)
        if verdict is not None:
            self._cache.move_to_end(key)
        return verdict

    async def _evaluate(self, payload: bytes) -> Verdict:
        """One evaluation in the worker; the caller holds the lock.

        A worker that dies is replaced and the evaluation tried once more: it may
        have died of something else (killed from outside) between two evaluations.
        Dying twice on the same input is the input's doing.
        """
        verdict = await self._attempt(payload)
        if verdict is _DIED:
            verdict = await self._attempt(payload)
        if verdict is _DIED:
            return failed_verdict(
                "its evaluation crashed (it may have needed more than "
                f"{self.memory_budget // (1024 * 1024)} MiB of memory, the memory budget)"
            )
        assert isinstance(verdict, bool | str)
        return verdict

    async def _attempt(self, payload: bytes) -> Verdict | object:
        """One try in the worker: the verdict, or ``_DIED``."""
        worker = await self._running_worker()
        assert worker.stdin is not None and worker.stdout is not None
        self.evaluations += 1
        try:
            async with asyncio.timeout(self.time_budget):
                worker.stdin.write(len(payload).to_bytes(_HEADER, "big") + payload)
                await worker.stdin.drain()
                size = int.from_bytes(await worker.stdout.readexactly(_HEADER), "big")
                answer = orjson.loads(await worker.stdout.readexactly(size))
        except TimeoutError:
            log.warning(
                "a `when` condition overran its %g s budget; its worker is killed", self.time_budget
            )
            await self._stop(kill=True)
            return failed_verdict(f"it took longer than {self.time_budget:g} s (the time budget)")
        except (asyncio.IncompleteReadError, ConnectionError, orjson.JSONDecodeError):
            code = await self._stop(kill=True)
            log.warning("the condition worker died (exit code %s); a new one will start", code)
            return _DIED
        if answer.get("memory"):
            # The worker exits after running out: its heap is not to be trusted.
            await self._stop(kill=False)
            return self._memory_verdict()
        if "error" in answer:
            return str(answer["error"])
        return bool(answer["verdict"])

    def _memory_verdict(self) -> str:
        return failed_verdict(
            f"it needed more than {self.memory_budget // (1024 * 1024)} MiB of memory "
            "(the memory budget)"
        )

    async def _running_worker(self) -> asyncio.subprocess.Process:
        worker = self._worker
        if worker is not None and worker.returncode is None:
            return worker
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": _PACKAGE_ROOT + (os.pathsep + path if path else "")}
        self._worker = await asyncio.create_subprocess_exec(
            *self.worker_command,
            str(self.memory_budget),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            # Its own session: a Ctrl-C in the terminal is for the server, which then
            # closes the worker's input.
            start_new_session=True,
        )
        self.workers_started += 1
        return self._worker

    async def _stop(self, *, kill: bool) -> int | None:
        """Stop the worker if there is one; its exit code."""
        worker, self._worker = self._worker, None
        if worker is None:
            return None
        if worker.returncode is None:
            if kill:
                worker.kill()
            elif worker.stdin is not None:
                worker.stdin.close()
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    return await worker.wait()
            except TimeoutError:
                worker.kill()
        return await worker.wait()


def _encoded(value: Any) -> tuple[bytes, bytes]:
    """``value`` as JSON and a digest of it (the cache keeps digests, not megabytes)."""
    data = orjson.dumps(value)
    return data, hashlib.blake2b(data, digest_size=16).digest()


# --------------------------------------------------------------------- the worker


def _limit_memory(budget: int) -> None:
    """Cap this process's address space at what it uses now plus ``budget``."""
    in_use = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                in_use = int(line.split()[1]) * 1024
    limit = in_use + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # A crash leaves no core file of a context that may hold secrets.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _answer(payload: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(payload)
        verdict = compile_condition(request["source"]).evaluate(
            request["context"], request["steps"]
        )
    except MemoryError:
        return {"memory": True}
    except ConditionError as exc:
        # cel-cpp reports a failed allocation as an error value, not as MemoryError.
        if "bad_alloc" in str(exc):
            return {"memory": True}
        return {"error": failed_verdict(str(exc))}
    return {"verdict": verdict}


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer frames until the input closes, or until memory ran out once."""
    while True:
        header = stdin.read(_HEADER)
        if len(header) < _HEADER:
            return
        payload = stdin.read(int.from_bytes(header, "big"))
        answer = orjson.dumps(_answer(payload))
        stdout.write(len(answer).to_bytes(_HEADER, "big") + answer)
        stdout.flush()
        if b'"memory"' in answer:
            return


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Imports and the first compile happen before the limit: they are not the budget.
    compile_condition("true")
    _limit_memory(int(sys.argv[1]))
    with contextlib.suppress(BrokenPipeError):
        _serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
