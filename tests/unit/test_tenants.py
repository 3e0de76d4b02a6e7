"""Namespaces: names, scoped ids and keys, callback tokens, and the signing-secret cache."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Secret

from app.keys import generate_api_key, hash_api_key, key_prefix, new_key_id
from app.schemas import ID_PATTERN
from app.tenants import (
    DEFAULT_NAMESPACE,
    NAMESPACE_PATTERN,
    NamespaceSigners,
    check_namespace,
    is_namespace,
    namespace_of,
    public_id,
    scoped_id,
    scoped_idempotency_key,
)
from app.tokens import CallbackClaim, CallbackTokens, InvalidToken
from baton.signing import Signer, generate_secret

namespaces = st.from_regex(re.compile(NAMESPACE_PATTERN), fullmatch=True)
workflow_ids = st.from_regex(re.compile(ID_PATTERN), fullmatch=True)


@pytest.mark.parametrize("name", ["default", "acme", "a", "0", "team_1", "x-y", "a" * 63])
def test_valid_namespaces(name: str) -> None:
    assert is_namespace(name)
    assert check_namespace(name) == name


@pytest.mark.parametrize(
    "name", ["", "Acme", "-a", "_a", "a/b", "a.b", "a b", "a" * 64, "é", "a\n", "ns\x1f"]
)
def test_invalid_namespaces(name: str) -> None:
    assert not is_namespace(name)
    with pytest.raises(ValueError, match="lower-case"):
        check_namespace(name)


def test_the_default_namespace_keeps_plain_ids() -> None:
    # Databases from before namespaces hold plain ids: they stay the default namespace's.
    assert scoped_id(DEFAULT_NAMESPACE, "order-1") == "order-1"
    assert namespace_of("order-1") == DEFAULT_NAMESPACE
    assert public_id("order-1") == "order-1"
    assert scoped_idempotency_key(DEFAULT_NAMESPACE, "k") == "k"


def test_other_namespaces_prefix_their_ids() -> None:
    assert scoped_id("acme", "order-1") == "acme/order-1"
    assert namespace_of("acme/order-1") == "acme"
    assert public_id("acme/order-1") == "order-1"


@given(namespaces, workflow_ids)
def test_scoped_ids_round_trip(namespace: str, workflow_id: str) -> None:
    scoped = scoped_id(namespace, workflow_id)
    assert public_id(scoped) == workflow_id
    assert namespace_of(scoped) == namespace
    assert len(scoped) <= 192  # the width of workflows.id


@given(namespaces, namespaces, workflow_ids, workflow_ids)
def test_scoped_ids_never_collide(a: str, b: str, id_a: str, id_b: str) -> None:
    if (a, id_a) != (b, id_b):
        assert scoped_id(a, id_a) != scoped_id(b, id_b)


@given(namespaces, namespaces, st.text(min_size=1, max_size=255), st.text(min_size=1, max_size=255))
def test_scoped_idempotency_keys_never_collide(a: str, b: str, key_a: str, key_b: str) -> None:
    # The API refuses control characters in keys, so the separator cannot be faked.
    if "\x1f" in key_a or "\x1f" in key_b:
        return
    if (a, key_a) != (b, key_b):
        assert scoped_idempotency_key(a, key_a) != scoped_idempotency_key(b, key_b)
    assert len(scoped_idempotency_key(a, key_a)) <= 320


# --------------------------------------------------------------------------- keys


def test_stored_keys_are_found_by_a_one_way_hash() -> None:
    key = generate_api_key()
    digest = hash_api_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_api_key(key.encode())
    assert key not in digest
    assert key.startswith(key_prefix(key)) and len(key_prefix(key)) == 10
    assert re.fullmatch(r"key_[0-9a-f]{16}", new_key_id())
    assert new_key_id() != new_key_id()


# --------------------------------------------------------------------------- tokens


def test_tokens_carry_the_public_id_and_the_namespace() -> None:
    tokens = CallbackTokens("token-key")
    claim = CallbackClaim("acme/order-1", "charge", "run1", 2)
    token = tokens.make(claim)
    assert tokens.load(token) == claim
    # The signed payload names the public id, never the stored one.
    payload = tokens._serializer.loads(token)
    # [public id, step, run, attempt, lifetime (seconds), namespace]
    assert payload == ["order-1", "charge", "run1", 2, 31 * 86400, "acme"]


def test_default_namespace_tokens_name_no_namespace() -> None:
    tokens = CallbackTokens("token-key")
    claim = CallbackClaim("order-1", "charge", "run1", 1)
    token = tokens.make(claim, lifetime=60)
    assert tokens._serializer.loads(token) == ["order-1", "charge", "run1", 1, 60]
    assert tokens.load(token) == claim


def test_tokens_from_before_lifetimes_load_in_the_default_namespace() -> None:
    tokens = CallbackTokens("token-key")
    legacy = tokens._serializer.dumps(["order-1", "charge", "run1", 1])
    assert tokens.load(legacy) == CallbackClaim("order-1", "charge", "run1", 1)


@pytest.mark.parametrize(
    "payload",
    [
        ["order-1", "charge", "run1"],
        ["order-1", "charge", "run1", 1, 60, "Not/A/Namespace"],
        ["order-1", "charge", "run1", 1, 60, "acme", "extra"],
        ["order-1", "charge", "run1", 1, "acme"],
        {"workflow": "order-1"},
        ["order-1", "charge", "run1", "one"],
    ],
)
def test_tokens_with_unexpected_contents_are_refused(payload: object) -> None:
    tokens = CallbackTokens("token-key")
    with pytest.raises(InvalidToken):
        tokens.load(tokens._serializer.dumps(payload))


# --------------------------------------------------------------------------- signers


class FakeSecrets:
    def __init__(self, secrets: Mapping[str, Sequence[str]]) -> None:
        self.secrets = dict(secrets)
        self.loads: list[str] = []
        self.fail = False

    async def __call__(self, namespace: str) -> Sequence[Secret]:
        self.loads.append(namespace)
        if self.fail:
            raise OSError("database unreachable")
        return [Secret(s) for s in self.secrets.get(namespace, [])]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


GLOBAL = generate_secret()
ACME = generate_secret()


def signature_by(signer: Signer) -> str:
    return signer.sign("msg_1", 1_700_000_000, b"{}")


async def test_default_namespace_workflows_sign_with_the_global_secrets_without_a_query() -> None:
    load = FakeSecrets({"acme": [ACME]})
    signers = NamespaceSigners(Signer(GLOBAL), load)
    signer = await signers.for_workflow("order-1")
    assert signature_by(signer) == signature_by(Signer(GLOBAL))
    assert load.loads == []


async def test_a_namespace_with_secrets_signs_with_them_and_others_with_the_global_ones() -> None:
    load = FakeSecrets({"acme": [ACME]})
    signers = NamespaceSigners(Signer(GLOBAL), load)
    acme = await signers.for_workflow("acme/order-1")
    other = await signers.for_workflow("other/order-1")
    assert signature_by(acme) == signature_by(Signer(ACME))
    assert signature_by(other) == signature_by(Signer(GLOBAL))


async def test_a_namespace_is_read_when_first_used_then_once_per_refresh_period() -> None:
    load = FakeSecrets({})
    clock = Clock()
    signers = NamespaceSigners(Signer(GLOBAL), load, refresh=10, clock=clock)
    assert signature_by(await signers.for_workflow("beta/w")) == signature_by(Signer(GLOBAL))
    # Secrets given to a namespace before its first workflow are used from the first request,
    # however long ago another namespace was read.
    load.secrets["acme"] = [ACME]
    clock.now = 5
    for _ in range(50):
        assert signature_by(await signers.for_workflow("acme/w")) == signature_by(Signer(ACME))
    assert load.loads == ["beta", "acme"]
    # A rotation is picked up once the namespace's period has passed.
    new = generate_secret()
    load.secrets["acme"] = [ACME, new]
    clock.now = 14.9
    assert signature_by(await signers.for_workflow("acme/w")) == signature_by(Signer(ACME))
    clock.now = 15.0
    rotated = await signers.for_workflow("acme/w")
    assert signature_by(rotated) == signature_by(Signer([ACME, new]))
    assert load.loads == ["beta", "acme", "acme"]


async def test_concurrent_sends_read_a_namespace_once() -> None:
    load = FakeSecrets({"acme": [ACME]})
    signers = NamespaceSigners(Signer(GLOBAL), load)
    results = await asyncio.gather(*(signers.for_workflow(f"acme/w{n}") for n in range(20)))
    assert len({signature_by(r) for r in results}) == 1
    assert load.loads == ["acme"]


async def test_a_failed_read_keeps_the_secrets_read_last() -> None:
    load = FakeSecrets({"acme": [ACME]})
    clock = Clock()
    signers = NamespaceSigners(Signer(GLOBAL), load, refresh=10, clock=clock)
    await signers.for_workflow("acme/w")
    load.fail = True
    clock.now = 11
    signer = await signers.for_workflow("acme/w")
    assert signature_by(signer) == signature_by(Signer(ACME))


async def test_a_failed_first_read_is_an_error() -> None:
    load = FakeSecrets({})
    load.fail = True
    signers = NamespaceSigners(Signer(GLOBAL), load)
    with pytest.raises(OSError):
        await signers.for_workflow("acme/w")


async def test_a_malformed_stored_secret_is_skipped_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    load = FakeSecrets({"acme": ["whsec_!!not base64!!", ACME], "broken": ["whsec_%nope%"]})
    signers = NamespaceSigners(Signer(GLOBAL), load)
    assert signature_by(await signers.for_workflow("acme/w")) == signature_by(Signer(ACME))
    assert signature_by(await signers.for_workflow("broken/w")) == signature_by(Signer(GLOBAL))
    assert "not base64" not in caplog.text and "nope" not in caplog.text
    assert ACME not in repr(signers) and ACME not in caplog.text
