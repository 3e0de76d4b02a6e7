"""The one gateway to the database.

Only this package touches Tortoise models. It hands out plain values (dicts in
the API's wire shape, or small dataclasses for the dispatcher), and every state
change is a conditional write plus its event rows inside one transaction.

The map — each module is one role; ``Store`` puts them together:

==================  ===========================================================
``session``         ``StoreCore``: lock a workflow, load what its machine asks
                    for, run it, gather its effects, write them (every role
                    below builds on it)
``creating``        new workflows, inserted in group commits
``reading``         status documents, lists, steps, events, counts
``claiming``        due deliveries taken under a lease; renewing and releasing
``settling``        answers, async callbacks and heartbeats
``actions``         cancel, retry, retry a step, workflow timeouts, purging
``credentials``     API keys, namespaces' signing secrets, server secrets
``render``          rows as the API's JSON documents; list cursors
``rows``            rows as the engine's values; ids; the columns machines need
``graphs``          the per-process cache of workflow graphs
``work``            what the store and the dispatcher hand each other
``sql``             the SQL toolkit, with the same behaviour on both databases
==================  ===========================================================

Work is claimed, never remembered: what Baton owes anyone is a row in
``deliveries`` with a due time; a process claims due rows under a lease, and a
row whose lease ran out is claimed again by whoever comes next.
"""

from __future__ import annotations

from app.store.actions import Actions
from app.store.claiming import Claiming
from app.store.creating import Creating
from app.store.credentials import ApiKeyInfo, Credentials, SecretInfo, secret_fingerprint
from app.store.reading import (
    EVENTS_LIMIT_DEFAULT,
    EVENTS_LIMIT_MAX,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    Reading,
    RenderedEvent,
)
from app.store.render import decode_cursor, encode_cursor
from app.store.rows import utcnow
from app.store.settling import Settling
from app.store.sql import retry_transaction
from app.store.work import OutboundRequest, Report, SettleSummary

__all__ = [
    "EVENTS_LIMIT_DEFAULT",
    "EVENTS_LIMIT_MAX",
    "LIST_LIMIT_DEFAULT",
    "LIST_LIMIT_MAX",
    "ApiKeyInfo",
    "OutboundRequest",
    "RenderedEvent",
    "Report",
    "SecretInfo",
    "SettleSummary",
    "Store",
    "decode_cursor",
    "encode_cursor",
    "retry_transaction",
    "secret_fingerprint",
    "utcnow",
]


class Store(Credentials, Creating, Reading, Claiming, Settling, Actions):
    """Domain operations over the database; one instance per server process."""
