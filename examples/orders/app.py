"""An order-processing handler app for Baton: validate → charge → fulfill → notify.

Run it next to a Baton server (see README.md in this folder)::

    .venv/bin/uvicorn examples.orders.app:app --port 9000

``GET /workflow.json`` answers the example workflow with its URLs pointing at this
app, on whatever port it runs. The signing secret comes from ``BATON_SIGNING_SECRET``
(or the server's own ``BATON_SIGNING_SECRETS``), else from the first line of
``data/signing-secret``: see ``examples.common.load_secrets``.

Setting ``context.failAt`` to a step id (``/workflow.json?failAt=fulfill``) makes
that step fail for good, which shows saga compensation: a failed ``fulfill`` refunds
the charge.
"""

from __future__ import annotations

import secrets as _random
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeGuard

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from baton.signing import InvalidSignature, Signer
from baton.starlette import StepFailed, StepRequest, step_endpoint, verify_request
from examples.common import load_secrets, workflow_endpoint

__all__ = ["app", "create_app", "load_secrets"]

#: The example workflow, its URLs as paths of this app.
WORKFLOW = Path(__file__).with_name("workflow.json")


class FakePayments:
    """Stands in for a payment provider; charges are keyed by workflow so retries are safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._charges: dict[str, str] = {}
        self._refunded: set[str] = set()

    def charge(self, order_key: str, amount: int) -> str:
        """Charge ``amount`` once per ``order_key``; a repeat returns the first charge's id."""
        with self._lock:
            return self._charges.setdefault(order_key, f"ch_{_random.token_hex(8)}")

    def refund(self, charge_id: str) -> bool:
        """Refund a charge; return False if it had been refunded already."""
        with self._lock:
            if charge_id in self._refunded:
                return False
            self._refunded.add(charge_id)
            return True


payments = FakePayments()


def log_request(step: StepRequest) -> None:
    """Print one line for each request Baton sends."""
    print(
        f"orders: {step.kind} {step.step_id} workflow={step.workflow_id} "
        f"attempt={step.attempt} id={step.message_id}",
        flush=True,
    )


def fail_if_asked(step: StepRequest) -> None:
    """Fail this step for good when ``context.failAt`` names it, to demonstrate sagas."""
    if step.context.get("failAt") == step.step_id:
        raise StepFailed(f"{step.step_id} failed on purpose (context.failAt)", retry=False)


async def validate(step: StepRequest) -> dict[str, Any]:
    """Check the order and work out its total (in cents)."""
    log_request(step)
    fail_if_asked(step)
    items = step.context.get("items")
    if not items or not isinstance(items, list):
        # Retrying cannot add items to the order.
        raise StepFailed("the order has no items", retry=False)
    total: float = 0
    for index, item in enumerate(items):
        price = item.get("price") if isinstance(item, dict) else None
        qty = item.get("qty") if isinstance(item, dict) else None
        if not (_is_number(price) and _is_number(qty)):
            raise StepFailed(f"items[{index}] needs a numeric price and qty", retry=False)
        total += price * qty
    return {"total": total}


async def charge(step: StepRequest) -> dict[str, Any]:
    """Charge the total that ``validate`` worked out."""
    log_request(step)
    fail_if_asked(step)
    total = step.result_of("validate")["total"]
    # Keyed by workflow, not by attempt: a retry after a lost answer must not charge twice.
    return {"chargeId": payments.charge(step.workflow_id, total), "amount": total}


async def fulfill(step: StepRequest) -> dict[str, Any]:
    """Hand the order to the warehouse."""
    log_request(step)
    fail_if_asked(step)
    return {"shipmentId": f"shp_{_random.token_hex(8)}"}


def notify(step: StepRequest) -> dict[str, Any]:
    """Tell the customer; a plain function, run in a worker thread, as a blocking mailer would."""
    log_request(step)
    fail_if_asked(step)
    return {"notified": True}


async def refund(step: StepRequest) -> dict[str, Any]:
    """Compensate ``charge``: refund the charge it made."""
    log_request(step)
    compensating = step.compensating or {}
    charge_id = (compensating.get("result") or {}).get("chargeId")
    if not charge_id:
        raise StepFailed("nothing to refund: the charge step has no chargeId", retry=False)
    return {"refunded": charge_id, "alreadyRefunded": not payments.refund(charge_id)}


def hook_endpoint(label: str, signer: Signer) -> Callable[[Request], Awaitable[Response]]:
    """Build an endpoint for Baton's onComplete / onError calls that logs what it gets."""

    async def endpoint(request: Request) -> Response:
        try:
            body = await verify_request(request, signer)
        except InvalidSignature as exc:
            return JSONResponse({"error": f"invalid signature: {exc}"}, status_code=401)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        print(
            f"orders: {label} workflow={body.get('workflowId')} status={body.get('status')} "
            f"completed={body.get('completedSteps')} failed={body.get('failedSteps')} "
            f"error={body.get('error')}",
            flush=True,
        )
        return JSONResponse({"received": True})

    endpoint.__name__ = f"hook_{label}"
    return endpoint


def create_app(secrets: list[str] | None = None) -> Starlette:
    """Build the app; ``secrets`` default to :func:`load_secrets`."""
    signer = Signer(secrets if secrets is not None else load_secrets())
    steps = {
        "validate": validate,
        "charge": charge,
        "fulfill": fulfill,
        "notify": notify,
        "refund": refund,
    }
    routes = [
        Route(f"/jobs/{name}", step_endpoint(func, secrets=signer), methods=["POST"])
        for name, func in steps.items()
    ]
    routes += [
        Route("/hooks/done", hook_endpoint("done", signer), methods=["POST"]),
        Route("/hooks/failed", hook_endpoint("failed", signer), methods=["POST"]),
        Route("/workflow.json", workflow_endpoint(WORKFLOW), methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


app = create_app()
