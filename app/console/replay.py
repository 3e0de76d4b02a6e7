"""The request an attempt sent, rebuilt from what is stored, and a curl command for it.

Baton does not store request bodies: it rebuilds one from the same inputs the
dispatcher used — the workflow's context, the step's ancestors as they stand
(they do not change during a run: re-running an ancestor re-runs the step),
the attempt's start time (``webhook-timestamp`` and ``deadline``) and the
callback token of that attempt of the step's current run — through the same
function (``app.delivery.build_request``). The rebuilt request is therefore the
one sent for every attempt of the step's current run, signed with the current
signing secrets. An attempt of an earlier run (before a manual retry) is not
rebuilt: its run's callback token and inputs are gone.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app import dag
from app.delivery import USER_AGENT, build_request, step_callback_url
from app.engine import DeliveryKind, RetryPolicy, previous_steps
from app.store import OutboundRequest
from app.store.rows import message_id
from app.tokens import CallbackTokens
from baton.signing import ID_HEADER, Signer


@dataclass(frozen=True, slots=True)
class Replay:
    url: str
    headers: dict[str, str]
    body: bytes

    def signed_at(self, signer: Signer, when: datetime) -> Replay:
        """The same request signed afresh at ``when`` (same webhook-id and body), so a
        handler that checks the timestamp accepts it for a few minutes."""
        headers = dict(self.headers)
        headers.update(signer.headers(headers[ID_HEADER], int(when.timestamp()), self.body))
        return Replay(url=self.url, headers=headers, body=self.body)

    def curl(self) -> str:
        """A shell command that sends exactly this request (the body byte for byte)."""
        parts = ["curl", "-sS", "-X", "POST", self.url]
        for name, value in self.headers.items():
            parts += ["-H", f"{name}: {value}"]
        parts += ["--data-raw", self.body.decode()]
        return shlex.join(parts)


def rebuild(
    workflow: Mapping[str, Any],
    scoped_workflow_id: str,
    step_id: str,
    *,
    kind: DeliveryKind,
    attempt: Mapping[str, Any],
    run_id: str,
    signer: Signer,
    token_key: str,
    public_url: str,
) -> Replay | None:
    """The request of ``attempt`` (an ``attemptLog`` entry) of step ``step_id``.

    None when the attempt belongs to an earlier run of the step.
    """
    if attempt["webhookId"] != message_id(scoped_workflow_id, step_id, kind, run_id):
        return None
    steps = {s["id"]: s for s in workflow["steps"]}
    step = steps[step_id]
    graph = {s["id"]: s["dependsOn"] for s in workflow["steps"]}
    states = {s["id"]: s for s in workflow["steps"]}
    # What the workflow's requests carry: every ancestor, or only the parents.
    if workflow.get("previousSteps") == "parents":
        line = list(step["dependsOn"])
    else:
        line = dag.ancestors(step_id, graph)
    started = datetime.fromisoformat(attempt["startedAt"]).astimezone(UTC)
    compensating = None
    url = step["url"]
    if kind is DeliveryKind.COMPENSATION:
        compensating = {"stepId": step_id, "result": step["result"]}
        url = step["compensation"]
    request = OutboundRequest(
        delivery_id=0,
        workflow_id=scoped_workflow_id,
        workflow_name=workflow["name"],
        kind=kind,
        step_id=step_id,
        attempt=int(attempt["number"]),
        message_id=attempt["webhookId"],
        url=url,
        timeout=float(step["timeout"]),
        policy=RetryPolicy.from_dict(step["retries"]),
        run_id=run_id,
        context=workflow["context"],
        previous_steps=previous_steps(line, states),
        compensating=compensating,
        workflow_timeout=float(workflow["timeout"]),
    )
    callback_url = None
    if kind is DeliveryKind.STEP:
        # The token as issued when the attempt was sent: same claim, same second.
        issued = int(started.timestamp())
        tokens = CallbackTokens(token_key, clock=lambda: issued)
        callback_url = step_callback_url(tokens, public_url, request)
    headers, body = build_request(request, now=started, signer=signer, callback_url=callback_url)
    headers["User-Agent"] = USER_AGENT
    return Replay(url=url, headers=headers, body=body)
