"""Scale-out over real processes: several servers on one PostgreSQL, SQLite refusing a second.

DESIGN §5: server processes on one PostgreSQL share the work by leasing due steps; no
step is dispatched twice by live processes, and when one dies the others send its
requests in flight again (same ``webhook-id``) once their lease runs out. SQLite is for
one process: a second one on the same file, or ``uvicorn --workers 2``, refuses to
start and points to PostgreSQL.

The PostgreSQL tests use ``BATON_E2E_POSTGRES_URL`` or the local server at
127.0.0.1:5432 (user postgres) and are skipped when neither answers.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from contract import unique_id
from harness import (
    POSTGRES_ENV,
    BatonClient,
    BatonFactory,
    BatonServer,
    HandlerClient,
    postgres_database,
)
from helpers_durability import (
    DIAMOND,
    assert_completed,
    assert_dependencies_answered_first,
    assert_every_step_requested,
    assert_exactly_once,
    assert_refused_for_sqlite,
    assert_signed,
    assert_webhook_ids_kept,
    dag_body,
    group,
    lost,
    origin,
    script_delays,
    wait_stats,
)

pytestmark = pytest.mark.slow

LOCAL_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
#: Long enough that renewals (every third of it) survive a busy 2-core machine: a renewal
#: that comes too late is a legitimate at-least-once re-send, which these tests would
#: count as a duplicate.
LEASE = 4.0
FINISH = 90.0


@pytest.fixture(scope="module")
def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV) or LOCAL_POSTGRES
    try:
        with postgres_database(url):
            pass
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not answering at {url} ({exc}); start it (see README)")
    return url


@pytest.fixture
def clients() -> Iterator[list[BatonClient]]:
    """Collects ``BatonClient``s a test opens and closes them after it."""
    opened: list[BatonClient] = []
    yield opened
    for client in opened:
        client.close()


def create_through_each(
    servers: list[BatonServer], clients: list[BatonClient], bodies: list[dict]
) -> list[list[str]]:
    """Create ``bodies`` round-robin through ``servers``, all at once; ids per server."""
    clients.extend(server.client() for server in servers)
    mine = clients[-len(servers) :]
    shares = [bodies[i :: len(servers)] for i in range(len(servers))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(lambda client, share: client.create_many(share, concurrency=4), mine, shares))
    return [[body["id"] for body in share] for share in shares]


def wait_refusal(server: BatonServer, timeout: float) -> tuple[int | None, bool]:
    """Wait for ``server`` (launched) to exit on its own: (exit code, whether it served)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=1.0, trust_env=False) as probe:
        while time.monotonic() < deadline:
            code = server.wait_exit(0.2)
            if code is not None:
                return code, False
            try:
                if probe.get("/readyz").status_code == 200:
                    return None, True
            except httpx.HTTPError:
                pass
    return None, False


# Several processes on one PostgreSQL.


@pytest.mark.postgres
@pytest.mark.parametrize("processes", [2, 3])
def test_processes_on_one_postgres_send_every_step_exactly_once(
    baton_factory: BatonFactory,
    handler: HandlerClient,
    postgres_admin_url: str,
    clients: list[BatonClient],
    processes: int,
) -> None:
    workflows = 240
    script_delays(handler, dict.fromkeys(DIAMOND, 0.02))
    database_url = baton_factory.postgres_url(postgres_admin_url)
    servers = [baton_factory.create(database_url=database_url) for _ in range(processes)]
    ids = [unique_id(f"pg{processes}-{i}") for i in range(workflows)]

    created = create_through_each(servers, clients, [dag_body(handler, wid) for wid in ids])

    documents: dict[str, dict] = {}
    for index, share in enumerate(created):
        # Read each through a server other than the one it was created on.
        reader = clients[(index + 1) % processes]
        documents.update(reader.wait_all(share, "completed", FINISH))
    records = handler.requests(kind="steps")
    groups = group(records)
    assert_completed(documents, DIAMOND)
    assert_every_step_requested(groups, ids)
    assert_exactly_once(groups)
    assert_signed(records)
    assert_dependencies_answered_first(groups, ids)
    senders = {origin(r) for r in records}
    idle = [server.url for server in servers if server.url not in senders]
    assert not idle, f"servers that sent no request at all: {idle}"


@pytest.mark.postgres
def test_the_others_take_over_from_a_killed_postgres_process(
    baton_factory: BatonFactory,
    handler: HandlerClient,
    postgres_admin_url: str,
    clients: list[BatonClient],
) -> None:
    workflows = 60
    # d outlasts the lease: only renewals keep live processes from sending it twice.
    delays = {"a": 1.0, "b": 1.0, "c": 1.0, "d": LEASE + 0.5}
    script_delays(handler, delays)
    database_url = baton_factory.postgres_url(postgres_admin_url)
    servers = [
        baton_factory.create(
            database_url=database_url, extra_env={"BATON_LEASE_SECONDS": str(LEASE)}
        )
        for _ in range(3)
    ]
    victim, survivors = servers[1], [servers[0], servers[2]]
    ids = [unique_id(f"takeover-{i}") for i in range(workflows)]
    create_through_each(servers, clients, [dag_body(handler, wid) for wid in ids])

    wait_stats(
        handler,
        lambda stats: stats["inflightByOrigin"].get(victim.url, 0) >= 5,
        30,
        f"5 requests from {victim.url} in flight",
    )
    assert victim.kill() == -9
    killed_at = time.monotonic()

    documents = clients[0].wait_all(ids, "completed", FINISH)
    records = handler.requests(kind="steps")
    groups = group(records)
    assert_completed(documents, DIAMOND)
    assert_every_step_requested(groups, ids)
    assert_signed(records)
    assert_webhook_ids_kept(groups)
    assert_dependencies_answered_first(groups, ids)

    alive = {server.url for server in survivors}
    twice = {
        key: [origin(r) for r in rs]
        for key, rs in groups.items()
        if sum(origin(r) in alive for r in rs) != 1 or sum(origin(r) == victim.url for r in rs) > 1
    }
    assert not twice, f"not sent exactly once by live processes: {list(twice.items())[:5]}"

    orphans = lost([r for r in records if origin(r) == victim.url], killed_at)
    assert orphans, "the killed process had no request in flight"
    for orphan in orphans:
        key = (orphan["headers"]["baton-workflow-id"], orphan["name"])
        [again] = [r for r in groups[key] if origin(r) in alive]
        assert again["headers"]["webhook-id"] == orphan["headers"]["webhook-id"]
        # Taken over only once the lease (renewed every lease/3 at most) could have run out.
        assert again["received_mono"] >= killed_at + LEASE / 2, (
            f"{key} sent again {again['received_mono'] - killed_at:.2f} s after the kill"
        )


# SQLite is single-process.


def test_a_second_process_on_the_same_sqlite_file_is_refused(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    first = baton_factory.create()
    second = baton_factory.create(
        start=False,
        data_dir=first.data_dir,
        database_url=first.database_url,
        api_key=first.api_key,
        log_path=first.data_dir / "second.log",
    )

    second.launch()
    code, serving = wait_refusal(second, 20)

    assert not serving, f"a second process serves the same SQLite file:\n{second.log_tail()}"
    assert_refused_for_sqlite(second, code, "a second process on the same SQLite file")
    wid = unique_id("sqlite-first")
    with first.client() as api:
        api.create(dag_body(handler, wid))
        api.wait_status(wid, "completed", 30)

    # A crashed process holds nothing: the next one on the file starts and serves.
    assert first.kill() == -9
    second.start()
    with second.client() as api:
        assert api.get(wid)["status"] == "completed"


def test_uvicorn_workers_2_on_sqlite_is_refused(baton_factory: BatonFactory) -> None:
    server = baton_factory.create(start=False, extra_args=["--workers", "2"])

    server.launch()
    code = server.wait_exit(30)

    assert_refused_for_sqlite(server, code, "uvicorn --workers 2 on SQLite")
