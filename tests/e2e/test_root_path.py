"""Baton behind a reverse proxy's path prefix: ``uvicorn --root-path /baton``.

The proxy strips ``/baton`` and forwards the rest; uvicorn puts the prefix back in
the scope (``root_path``, and at the head of ``path``), and Baton must route, check
keys and answer links on the path without it.
"""

from __future__ import annotations

from harness import BatonFactory, HandlerClient


def test_the_api_works_behind_a_root_path(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    server = baton_factory.create(extra_args=["--root-path", "/baton"])
    handler.script(
        slow=[
            {
                "status": 202,
                "json": {"async": True},
                "then": [{"json": {"success": True, "result": "done later"}}],
            }
        ]
    )
    body = {
        "id": "prefixed",
        "steps": [
            {"id": "first", "url": handler.step_url("first")},
            {"id": "slow", "url": handler.step_url("slow"), "dependsOn": ["first"]},
        ],
    }
    with server.client() as api:
        response = api.http.post("/v1/workflows", json=body)
        assert response.status_code == 201, response.text
        assert response.headers["location"] == "/baton/v1/workflows/prefixed"
        done = api.wait_status("prefixed", "completed")
        assert done["results"]["slow"] == "done later"
        assert [w["id"] for w in api.list_workflows()["items"]] == ["prefixed"]
        assert [e["type"] for e in api.events("prefixed")][-1] == "workflow.completed"
        refused = api.http.get("/v1/workflows", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401, refused.text
        assert api.http.get("/openapi.json").json()["servers"] == [{"url": "/baton"}]
