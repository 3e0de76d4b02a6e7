"""Liveness: which server processes are alive, and taking back the work of dead ones.

A delivery in flight is leased by the process sending it. A process that dies
(kill -9, a lost machine) never renews its leases, and they run out after
``BATON_LEASE_SECONDS``; waiting that long after a crash is needless when it is
known that the owner is dead:

- on SQLite only one server process may run (it holds a lock beside the file), so
  a process that starts knows every lease it did not take is its predecessor's,
  and takes them back at once;
- on PostgreSQL every process keeps a row in ``servers`` and renews it every
  ``LIVENESS_INTERVAL`` seconds (the database's clock decides); a process whose
  row has not been renewed for ``DEAD_AFTER`` seconds is dead, and the sweep of
  any live process takes its leases back and deletes its row.

Taking a lease back makes the row due now, with its lease owner kept: the next
claim sends it again as a take-over, with the same webhook-id.
"""

from __future__ import annotations

from datetime import datetime

from app.models import Delivery, Server
from app.store.rows import utcnow
from app.store.session import StoreCore
from app.store.sql import supports_for_update

#: How often a process renews its liveness row (seconds).
LIVENESS_INTERVAL = 2.0
#: A process whose row is older than this is dead (three renewals missed).
DEAD_AFTER = 6.0


class Liveness(StoreCore):
    """This process's liveness row, and the leases of dead processes."""

    async def announce(self) -> None:
        """Say this process is alive: create or renew its row."""
        db = Server._meta.db
        now = utcnow()
        if supports_for_update():
            await db.execute_query(
                'INSERT INTO "servers" ("owner", "started_at", "seen_at") VALUES ($1, $2, now())'
                ' ON CONFLICT ("owner") DO UPDATE SET "seen_at" = now()',
                [self.owner, now],
            )
            return
        await db.execute_query(
            'INSERT INTO "servers" ("owner", "started_at", "seen_at") VALUES (?, ?, ?)'
            ' ON CONFLICT ("owner") DO UPDATE SET "seen_at" = excluded."seen_at"',
            [self.owner, now, now],
        )

    async def retire(self) -> None:
        """Forget this process's row (a graceful stop)."""
        await Server.filter(owner=self.owner).delete()

    async def take_over_predecessors(self) -> int:
        """SQLite, at start-up: every lease held by another owner is a dead process's
        (only one server process may run), so its rows become due now. Answers how
        many were taken back."""
        await Server.exclude(owner=self.owner).delete()
        return await _take_back(
            Delivery.filter(lease_owner__isnull=False).exclude(lease_owner=self.owner)
        )

    async def take_back_from_the_dead(self) -> int:
        """PostgreSQL: release the leases of processes whose liveness row is older than
        ``DEAD_AFTER`` seconds, and forget them. Answers how many rows were taken back."""
        db = Server._meta.db
        rows = await db.execute_query_dict(
            'DELETE FROM "servers" WHERE "seen_at" < now() - make_interval(secs => $1)'
            ' AND "owner" <> $2 RETURNING "owner"',
            [DEAD_AFTER, self.owner],
        )
        dead = [str(row["owner"]) for row in rows]
        if not dead:
            return 0
        return await _take_back(Delivery.filter(lease_owner__in=dead))

    async def servers(self) -> list[tuple[str, datetime, datetime]]:
        """Every process with a liveness row: (owner, started_at, seen_at)."""
        rows = (
            await Server.all().order_by("started_at").values_list("owner", "started_at", "seen_at")
        )
        return [(str(owner), started, seen) for owner, started, seen in rows]


async def _take_back(query: object) -> int:
    # Due now, its owner kept: claimed again as a take-over, same webhook-id.
    return int(await query.update(lease_until=0.0))  # type: ignore[attr-defined]
