"""Namespaces in the store, on SQLite and PostgreSQL: scoped workflows, keys, secrets."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.datastructures import Secret
from tortoise import connections

from app.db import close_database, open_database
from app.engine import classify_answer
from app.errors import Conflict, NotFound
from app.schemas import canonical_json, parse_create_request
from app.store import OutboundRequest, Report, Store, secret_fingerprint
from app.tokens import CallbackClaim, CallbackTokens
from baton.signing import generate_secret

#: The longest namespace and the longest id: the widest scoped id there can be.
LONG_NAMESPACE = "n" * 63
LONG_ID = "i" * 128


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    await open_database(database_url)
    try:
        yield Store()
    finally:
        await close_database()


async def create(
    store: Store, body: dict[str, Any], namespace: str, key: str | None = None
) -> tuple[dict[str, Any], bool]:
    model, document = parse_create_request(
        orjson.dumps(body), check_url=lambda url: None, check_condition=lambda source: None
    )
    digest = hashlib.sha256(canonical_json(document)).hexdigest()
    return await store.create_workflow(
        model, request_hash=digest, idempotency_key=key, namespace=namespace
    )


def chain(workflow_id: str | None, context: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "steps": [
            {"id": "a", "url": "http://h/a"},
            {"id": "b", "url": "http://h/b", "dependsOn": ["a"]},
        ],
        "context": context,
        "onComplete": "http://h/done",
    }
    if workflow_id is not None:
        body["id"] = workflow_id
    return body


async def drive(store: Store) -> list[OutboundRequest]:
    sent: list[OutboundRequest] = []
    for _ in range(50):
        reqs = await store.claim_due(100, lease_seconds=30, now=time.time() + 3600)
        if not reqs:
            return sent
        sent.extend(reqs)
        answers = [
            Report(
                request=j,
                result=classify_answer(200, orjson.dumps({"success": True, "result": j.step_id})),
                started_at=datetime.now(UTC),
                duration_ms=1.0,
            )
            for j in reqs
        ]
        await store.settle(answers, rand=lambda: 0.0)
    raise AssertionError("did not settle")


async def test_the_same_id_runs_as_two_workflows_in_two_namespaces(store: Store) -> None:
    a, created_a = await create(store, chain("order-1", {"owner": "acme"}), "acme")
    b, created_b = await create(store, chain("order-1", {"owner": "beta"}), "beta")
    assert created_a and created_b
    assert a["id"] == b["id"] == "order-1"
    sent = await drive(store)
    # Jobs carry the scoped id (the dispatcher and settle use it); bodies use the public one.
    assert sorted({j.workflow_id for j in sent}) == ["acme/order-1", "beta/order-1"]
    callbacks = [j for j in sent if j.payload is not None]
    assert [j.payload["workflowId"] for j in callbacks if j.payload] == ["order-1", "order-1"]
    for namespace in ("acme", "beta"):
        document = await store.get_workflow(f"{namespace}/order-1")
        assert document is not None
        assert document["id"] == "order-1"
        assert document["status"] == "completed"
        assert document["context"] == {"owner": namespace}
        events = await store.list_events(f"{namespace}/order-1")
        assert {e["workflowId"] for e in events} == {"order-1"}
    assert await store.get_workflow("order-1") is None


async def test_idempotency_is_scoped_by_namespace(store: Store) -> None:
    first, _ = await create(store, chain(None, {"n": 1}), "acme", key="k")
    other, created = await create(store, chain(None, {"n": 2}), "beta", key="k")
    assert created and other["id"] != first["id"]
    again, created = await create(store, chain(None, {"n": 1}), "acme", key="k")
    assert not created and again["id"] == first["id"]
    with pytest.raises(Conflict) as conflict:
        await create(store, chain(None, {"n": 3}), "acme", key="k")
    assert "acme" not in str(conflict.value)
    plain, created = await create(store, chain(None, {"n": 4}), "default", key="k")
    assert created and plain["id"] not in (first["id"], other["id"])


async def test_lists_are_per_namespace_and_page_within_it(store: Store) -> None:
    for n in range(4):
        await create(store, chain(f"w{n}", {}), "acme")
        await create(store, chain(f"w{n}", {}), "default")
    seen: list[str] = []
    cursor = None
    while True:
        items, cursor = await store.list_workflows(limit=3, cursor=cursor, namespace="acme")
        seen.extend(i["id"] for i in items)
        if cursor is None:
            break
    assert sorted(seen) == ["w0", "w1", "w2", "w3"]
    default, _ = await store.list_workflows(namespace="default")
    assert sorted(i["id"] for i in default) == ["w0", "w1", "w2", "w3"]
    assert await store.list_workflows(namespace="beta") == ([], None)


async def test_the_widest_ids_and_keys_fit(store: Store) -> None:
    # PostgreSQL enforces column widths: namespace/id is 192, namespace+key 319.
    document, created = await create(store, chain(LONG_ID, {}), LONG_NAMESPACE, key="k" * 255)
    assert created and document["id"] == LONG_ID
    await drive(store)
    scoped = f"{LONG_NAMESPACE}/{LONG_ID}"
    final = await store.get_workflow(scoped)
    assert final is not None and final["status"] == "completed"
    again, created = await create(store, chain(LONG_ID, {}), LONG_NAMESPACE, key="k" * 255)
    assert not created and again["id"] == LONG_ID


async def test_actions_on_a_scoped_id_name_the_public_one(store: Store) -> None:
    await create(store, chain("order-1", {}), "acme")
    await store.cancel("acme/order-1", compensate=False)
    with pytest.raises(Conflict) as conflict:
        await store.cancel("acme/order-1", compensate=False)
    assert "'order-1'" in str(conflict.value) and "acme" not in str(conflict.value)
    with pytest.raises(NotFound) as missing:
        await store.retry_step("acme/order-1", "zz")
    assert "acme" not in str(missing.value)
    with pytest.raises(NotFound) as missing:
        await store.retry("beta/order-1")
    assert str(missing.value) == "no workflow 'order-1'"


async def test_an_async_step_of_a_namespace_completes_through_its_token(store: Store) -> None:
    await create(store, {"id": "slow", "steps": [{"id": "a", "url": "http://h/a"}]}, "acme")
    [req] = await store.claim_due(10, lease_seconds=30)
    assert req.run_id is not None
    await store.settle(
        [
            Report(
                request=req,
                result=classify_answer(202, b'{"async": true}'),
                started_at=datetime.now(UTC),
                duration_ms=1.0,
            )
        ]
    )
    tokens = CallbackTokens("k")
    token = tokens.make(CallbackClaim(req.workflow_id, "a", req.run_id, req.attempt))
    claim = tokens.load(token)
    assert claim.workflow_id == "acme/slow"
    answer = await store.async_result(claim, b'{"success": true, "result": 1}')
    assert answer["status"] == "completed"
    document = await store.get_workflow("acme/slow")
    assert document is not None and document["status"] == "completed"


# --------------------------------------------------------------------------- keys


async def test_keys_are_created_found_by_hash_listed_and_revoked(store: Store) -> None:
    info, key = await store.create_api_key("acme")
    assert info.namespace == "acme" and str(key).startswith(info.prefix)
    assert "bk_" not in repr(key)  # a Secret: its repr hides it
    assert await store.authenticate(str(key)) == "acme"
    assert await store.authenticate(str(key) + "x") is None
    assert await store.authenticate("") is None
    listed = await store.list_api_keys()
    assert [k.id for k in listed] == [info.id]
    assert listed[0].last_used_at is not None
    assert await store.list_api_keys("beta") == []
    revoked = await store.revoke_api_key(info.id)
    assert revoked is not None and revoked[1] is True and revoked[0].revoked_at is not None
    assert await store.authenticate(str(key)) is None
    again = await store.revoke_api_key(info.id)
    assert again is not None and again[1] is False
    assert again[0].revoked_at == revoked[0].revoked_at
    assert await store.revoke_api_key("key_unknown") is None


async def test_no_clear_key_is_stored(store: Store, database_url: str) -> None:
    _, key = await store.create_api_key("acme")
    conn = connections.get("sqlite" if database_url.startswith("sqlite") else "postgres")
    _, rows = await conn.execute_query("SELECT * FROM api_keys")
    assert len(rows) == 1
    values = [str(v) for v in dict(rows[0]).values()]
    assert str(key) not in " ".join(values)
    assert hashlib.sha256(str(key).encode()).hexdigest() in values


async def test_namespace_secrets_are_added_replaced_and_cleared(store: Store) -> None:
    first, second = generate_secret(), generate_secret()
    _, _ = await store.create_api_key("acme", signing_secrets=[Secret(first)])
    assert [str(s) for s in await store.namespace_signing_secrets("acme")] == [first]
    assert await store.namespace_signing_secrets("beta") == []
    infos = await store.set_namespace_secrets("acme", [Secret(second)], replace=False)
    assert [i.fingerprint for i in infos] == [secret_fingerprint(first), secret_fingerprint(second)]
    # Adding one again changes nothing.
    assert len(await store.set_namespace_secrets("acme", [Secret(first)], replace=False)) == 2
    infos = await store.set_namespace_secrets("acme", [Secret(second)], replace=True)
    assert [i.fingerprint for i in infos] == [secret_fingerprint(second)]
    secrets = await store.namespace_signing_secrets("acme")
    assert [str(s) for s in secrets] == [second]
    assert second not in repr(secrets)
    assert await store.set_namespace_secrets("acme", [], replace=True) == []
    assert await store.namespace_signing_secrets("acme") == []


async def test_bad_namespaces_and_secrets_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="namespace"):
        await store.create_api_key("Not Valid")
    with pytest.raises(ValueError, match="BATON_SIGNING_SECRETS"):
        await store.create_api_key("default", signing_secrets=[Secret(generate_secret())])
    with pytest.raises(ValueError) as bad:
        await store.set_namespace_secrets("acme", [Secret("whsec_%%%")], replace=False)
    assert "%%%" not in str(bad.value)
    assert await store.list_api_keys() == []
    assert await store.namespace_signing_secrets("acme") == []
