"""Helpers for the store's integration tests: build specs, create workflows, answer."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from app.engine import AttemptResult, classify_answer
from app.schemas import canonical_json, parse_create_request
from app.store import OutboundRequest, Report, Store


def spec(body: dict[str, Any]) -> tuple[Any, str]:
    raw = orjson.dumps(body)
    model, document = parse_create_request(
        raw, check_url=lambda url: None, check_condition=lambda source: None
    )
    return model, hashlib.sha256(canonical_json(document)).hexdigest()


async def create(store: Store, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    model, digest = spec(body)
    document, _ = await store.create_workflow(model, request_hash=digest, idempotency_key=key)
    return document


def ok(result: Any = None) -> AttemptResult:
    return classify_answer(200, orjson.dumps({"success": True, "result": result}))


def report(req: OutboundRequest, result: AttemptResult) -> Report:
    return Report(request=req, result=result, started_at=datetime.now(UTC), duration_ms=1.0)


Answer = Callable[[OutboundRequest], AttemptResult]


async def drive(store: Store, answer: Answer, *, rounds: int = 200) -> list[OutboundRequest]:
    """Claim and settle until nothing is due; answers are chosen per req."""
    sent: list[OutboundRequest] = []
    for _ in range(rounds):
        reqs = await store.claim_due(100, lease_seconds=30, now=time.time() + 3600)
        if not reqs:
            return sent
        sent.extend(reqs)
        await store.settle([report(j, answer(j)) for j in reqs], rand=lambda: 0.0)
    raise AssertionError("the workflow did not settle")


def steps_by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in document["steps"]}
