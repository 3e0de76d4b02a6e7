"""What the store and the dispatcher hand each other.

- ``OutboundRequest``: a delivery claimed under a lease, with everything needed
  to build and sign its request (the dispatcher never reads the database);
- ``Report``: how sending it went, to be settled;
- ``SettleSummary``: what a settle made due;
- ``Handoff``: how many newly due requests a transaction may claim for its own
  process, and the ones it claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.engine import AttemptResult, DeliveryKind, RetryPolicy


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """A claimed delivery: everything the dispatcher needs to send it, and nothing else."""

    delivery_id: int
    workflow_id: str
    workflow_name: str | None
    kind: DeliveryKind
    step_id: str | None
    attempt: int
    message_id: str
    url: str
    timeout: float
    policy: RetryPolicy
    run_id: str | None = None
    context: Any = None
    previous_steps: dict[str, Any] | None = None
    #: The body for callbacks (fixed when the workflow ended).
    payload: dict[str, Any] | None = None
    #: For compensations: the step being undone and its result.
    compensating: dict[str, Any] | None = None
    #: An async step whose deadline passed: settle as a timeout, send nothing.
    expired: bool = False
    #: Claimed again after another process's lease ran out (same webhook-id).
    takeover: bool = False
    #: When the delivery fell due (epoch seconds), for the scheduling-delay metric.
    due_at: float = 0.0
    #: The workflow's timeout: how long a step request's callback token is accepted.
    workflow_timeout: float | None = None
    #: ``{"id", "scheduledAt"}`` for a workflow a schedule fired (step requests carry it).
    schedule: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of sending one request, to be settled in the database."""

    request: OutboundRequest
    result: AttemptResult
    started_at: datetime
    duration_ms: float


@dataclass(slots=True)
class SettleSummary:
    #: Deliveries that became due right now (wake the dispatcher).
    due_now: int = 0
    #: Deliveries this transaction made due and claimed for the caller to send now.
    requests: list[OutboundRequest] = field(default_factory=list)


@dataclass(slots=True)
class Handoff:
    """How many newly due step requests a settle may claim for its own process at once.

    Claiming them in the transaction that made them due saves the dispatcher a claim
    transaction per hop. The rows are leased like any claim: if this process dies
    before sending, the lease runs out and any process sends them again.
    """

    remaining: int
    lease_seconds: float
    requests: list[OutboundRequest] = field(default_factory=list)
    #: Requests made due that were not claimed here: someone must claim them.
    left_due: bool = False
    capacity: int = field(init=False)

    def __post_init__(self) -> None:
        self.capacity = self.remaining

    def reset(self) -> None:
        """Back to its first state (before a transaction runs again)."""
        self.remaining = self.capacity
        self.requests = []
        self.left_due = False
