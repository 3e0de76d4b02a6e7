"""What the example handler apps share: their signing secrets and their workflows.

- ``load_secrets``: the secrets a handler app verifies Baton's signatures with.
- ``workflow_endpoint``: ``GET /workflow.json`` of an app, its example workflow with
  every URL pointing at the app itself, at whatever address it was reached on — so
  the app can run on any port, and the workflow follows.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.config import Config
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

SECRET_FILE_NAME = "signing-secret"
#: The fields of a workflow (and of its steps) that hold a URL.
_WORKFLOW_URLS = ("onComplete", "onError")
_STEP_URLS = ("url", "compensation")


def load_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return the signing secrets from the environment or from Baton's data directory.

    ``BATON_SIGNING_SECRET`` (or the server's own ``BATON_SIGNING_SECRETS``), else the
    first line of ``data/signing-secret`` — the ``default`` namespace's secret, which
    Baton writes on first start (``BATON_DATA_DIR`` moves it, as it does for the
    server). Several comma-separated secrets are accepted, for rotation, or to take
    the requests of several namespaces.

    Raises:
        RuntimeError: no secret is configured and the server has not written one yet.
    """
    config = Config(environ=environ) if environ is not None else Config()
    value = config("BATON_SIGNING_SECRET", default="") or config(
        "BATON_SIGNING_SECRETS", default=""
    )
    if not value:
        path = Path(config("BATON_DATA_DIR", default="data")) / SECRET_FILE_NAME
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise RuntimeError(
                f"no signing secret: set BATON_SIGNING_SECRET, or start Baton once "
                f"from this directory so that it writes {path}"
            ) from None
        value = lines[0] if lines else ""
    secrets = [s.strip() for s in value.split(",") if s.strip()]
    if not secrets:
        raise RuntimeError("the signing secret is empty")
    return secrets


def workflow_endpoint(template: Path) -> Callable[[Request], Awaitable[Response]]:
    """``GET``: the workflow in ``template``, its URLs (paths there) made absolute against
    the address the request reached this app on.

    Query parameters go into the workflow's ``context`` as strings (``?failAt=fulfill``).
    """
    workflow = json.loads(template.read_text(encoding="utf-8"))

    async def endpoint(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        document: dict[str, Any] = copy.deepcopy(workflow)
        for step in document["steps"]:
            for name in _STEP_URLS:
                if name in step:
                    step[name] = base + step[name]
        for name in _WORKFLOW_URLS:
            if name in document:
                document[name] = base + document[name]
        document.setdefault("context", {}).update(request.query_params)
        return JSONResponse(document)

    return endpoint
