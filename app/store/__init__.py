"""The one gateway to the database.

Only this package touches Tortoise models. It hands out plain values (dicts in
the API's wire shape, or small dataclasses for the dispatcher), and every state
change is a conditional write plus its event rows inside one transaction.

The map — each module is one role; ``Store`` puts them together:

==================  ===========================================================
``session``         ``StoreCore``: lock a workflow, load what its machine asks
                    for, run it, gather its effects, write them (every role
                    below builds on it)
``creating``        new workflows, inserted in group commits; batches; delayed starts
``schedules``       schedules: stored, paused, triggered, fired — each tick once
``graphing``        a workflow's whole DAG as nodes and edges
``reading``         status documents, lists, steps, events, counts
``claiming``        due deliveries taken under a lease; renewing and releasing
``settling``        answers, async callbacks and heartbeats
``actions``         cancel, retry, retry a step, delayed starts, timeouts, purging
``credentials``     API keys, namespaces' signing secrets, server secrets
``liveness``        live processes; taking back the leases of dead ones
``console``         the reads only the console (app/console) asks
``render``          rows as the API's JSON documents; list cursors
``rows``            rows as the engine's values; ids; the columns machines need
``graphs``          the per-process cache of workflow graphs
``work``            what the store and the dispatcher hand each other
``sql``             the SQL toolkit, with the same behaviour on both databases
==================  ===========================================================

Work is claimed, never remembered: what Baton owes anyone is a row in
``deliveries`` with a due time; a process claims due rows under a lease, and a
row whose lease ran out is claimed again by whoever comes next.

The concurrency rule
--------------------

Everything that changes a workflow follows one rule, on both databases:

1. **Lock the workflow first, then read.** A transaction that settles an answer,
   takes an action, records a callback or a heartbeat, times a workflow out or
   purges it locks the workflow's row (``SELECT … FOR UPDATE`` on PostgreSQL, in
   workflow-id order when there are several, so two transactions cannot deadlock;
   on SQLite every transaction holds the database's write lock from its BEGIN)
   and only then reads its steps and deliveries. Nothing read after the lock can
   be changed by another such transaction before this one ends.
2. **Every conditional write carries what it expects.** The one writer that does
   not take the workflow's lock is the claim (it locks delivery rows with
   ``SKIP LOCKED`` and starts their steps), so what a claim may have changed is
   always checked: a step is written only if its status, attempts and run id are
   still those read; a delivery row is rescheduled, parked or deleted only if it
   still holds the attempt read, and dropped only if it is still leased by whom
   it was read as leased by (nobody, for a request not yet sent). Purging deletes
   only workflows still finished, and skips any another transaction has locked.
3. **A write that lost a race changes nothing and says so.** ``sql.update_many``
   and ``sql.delete_many`` raise ``TransitionRejected`` when a row missed; the
   transaction rolls back and ``sql.retry_transaction`` runs it again, now reading
   what the winner committed (a request a claim is sending is left to finish; a
   step a callback rescheduled is not settled twice).

Orders that matter come from the database, never from a clock: a step's
``completion_seq`` (saga compensations run in reverse completion order) is the
workflow's ``completions`` counter, taken under the workflow's lock.
"""

from __future__ import annotations

from app.store.actions import Actions
from app.store.claiming import Claiming
from app.store.creating import Creating
from app.store.credentials import ApiKeyInfo, Credentials, SecretInfo, secret_fingerprint
from app.store.graphing import Graphing
from app.store.liveness import Liveness
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
from app.store.schedules import FireReport, Schedules
from app.store.settling import Settling
from app.store.sql import retry_transaction
from app.store.work import OutboundRequest, Report, SettleSummary

__all__ = [
    "EVENTS_LIMIT_DEFAULT",
    "EVENTS_LIMIT_MAX",
    "LIST_LIMIT_DEFAULT",
    "LIST_LIMIT_MAX",
    "ApiKeyInfo",
    "FireReport",
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


class Store(
    Credentials, Schedules, Creating, Reading, Graphing, Claiming, Settling, Actions, Liveness
):
    """Domain operations over the database; one instance per server process."""
