"""Prometheus metrics for one server process (``GET /metrics``).

Each process exports its own counters; scrape every process (with several
uvicorn workers, use one process per port or the PostgreSQL deployment in
docs/operations.md). Workflow counts by status come from the database at
scrape time, so they are the same whichever process answers.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

#: Every event type of DESIGN §6, exported from the start (at 0 until one happens).
EVENT_TYPES = (
    "workflow.created",
    "workflow.started",
    "step.started",
    "step.completed",
    "step.failed",
    "step.retrying",
    "step.skipped",
    "step.cancelled",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "workflow.compensating",
    "compensation.completed",
    "compensation.failed",
    "workflow.compensated",
    "workflow.compensation_failed",
    "callback.delivered",
    "callback.failed",
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


#: What a schedule's tick can come to (``recentRuns[].outcome``).
SCHEDULE_OUTCOMES = ("fired", "skipped", "missed", "buffered")


class _TallyCollector(Collector):
    """Exports one of the store's running tallies as a counter with one label.

    Every value of ``known`` is exported from the start (at 0 until counted); a value
    counted that ``known`` does not list is exported too.
    """

    def __init__(
        self, tally: Tally[str], name: str, documentation: str, label: str, known: tuple[str, ...]
    ) -> None:
        self.tally = tally
        self._family = (name, documentation, label)
        self._known = known

    def collect(self) -> Iterator[CounterMetricFamily]:
        name, documentation, label = self._family
        family = CounterMetricFamily(name, documentation, labels=[label])
        for value in (*self._known, *sorted(set(self.tally) - set(self._known))):
            family.add_metric([value], float(self.tally.get(value, 0)))
        yield family


class Metrics:
    """The metrics of one process, in a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        events: Tally[str],
        inflight: Callable[[], int],
        schedule_ticks: Tally[str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.attempts = Counter(
            "baton_delivery_attempts",
            "Requests sent, by kind (step, compensation, on_complete, on_error) and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "baton_delivery_duration_seconds",
            "Time from sending a request to having its answer, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scheduling_seconds = Histogram(
            "baton_scheduling_delay_seconds",
            "Time from a delivery falling due (its dependencies settled, or its retry time "
            "came) to its request being sent.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.takeovers = Counter(
            "baton_lease_takeovers",
            "Deliveries claimed again after another process's lease ran out.",
            registry=self.registry,
        )
        self.inflight = Gauge(
            "baton_deliveries_in_flight",
            "Requests this process has claimed and not settled.",
            registry=self.registry,
        )
        self.inflight.set_function(lambda: float(inflight()))
        self.workflows = Gauge(
            "baton_workflows",
            "Workflows in the database, by status.",
            ["status"],
            registry=self.registry,
        )
        self.registry.register(
            _TallyCollector(
                events,
                "baton_events",
                "Events (workflow and step transitions) recorded by this process, by type.",
                "type",
                EVENT_TYPES,
            )
        )
        self.registry.register(
            _TallyCollector(
                schedule_ticks if schedule_ticks is not None else Tally(),
                "baton_schedule_fires",
                "Ticks of schedules handled by this process, by outcome: fired (a workflow "
                "created, triggers included), skipped (overlap), missed (older than the "
                "catch-up window when seen), buffered (waiting for the previous workflow).",
                "outcome",
                SCHEDULE_OUTCOMES,
            )
        )

    def render(self, workflows_by_status: dict[str, int]) -> bytes:
        for status, count in workflows_by_status.items():
            self.workflows.labels(status=status).set(count)
        return generate_latest(self.registry)
