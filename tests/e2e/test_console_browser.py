"""The console in a real browser: Debian's Chromium driven by Playwright, against a real
Baton server and the scripted handler app.

Chromium is ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it
when missing), never a browser Playwright downloads. Every page a test opens records
each request the browser makes, and no request may leave the server's origin.
Screenshots of the pages go to the test's temporary directory; with
``BATON_CONSOLE_SCREENSHOTS=<dir>`` they are also copied there (how docs/console/
is made).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import BatonClient, BatonServer, HandlerClient
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
SCREENSHOTS_ENV = "BATON_CONSOLE_SCREENSHOTS"
VIEWPORT = {"width": 1440, "height": 900}
#: How long the page of a 3,000-step workflow may take to become interactive.
LARGE_PAGE_SECONDS = 5.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the console's tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Session:
    """A browser context logged in (or not) to one server, recording every request."""

    def __init__(self, browser: Browser, server: BatonServer, shots: Path, **options: Any):
        self.server = server
        self.shots = shots
        self.context: BrowserContext = browser.new_context(viewport=VIEWPORT, **options)
        self.requests: list[str] = []
        self.scheme = str(options.get("color_scheme", "light"))
        self.errors: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page: Page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def login(self, key: str | None = None) -> Page:
        page = self.page
        page.goto(self.server.url + "/")
        page.fill("input[name=key]", key or self.server.api_key)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/workflows")
        return page

    def open(self, path: str) -> Page:
        self.page.goto(self.server.url + path)
        self.page.wait_for_selector("body[data-ready=true]")
        return self.page

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        target = os.environ.get(SCREENSHOTS_ENV)
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)
        return path

    def check(self) -> None:
        """No request left the origin and no script failed."""
        outside = [
            url
            for url in self.requests
            if not url.startswith(self.server.url + "/") and not url.startswith("data:")
        ]
        assert outside == [], outside
        assert self.errors == []

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(browser: Browser, baton: BatonServer, tmp_path: Path) -> Iterator[Session]:
    opened = Session(browser, baton, tmp_path)
    try:
        yield opened
        opened.check()
    finally:
        opened.close()


def chain(handler: HandlerClient, workflow_id: str, *names: str, **fields: Any) -> dict[str, Any]:
    steps = []
    for i, name in enumerate(names):
        step: dict[str, Any] = {"id": name, "url": handler.step_url(name)}
        if i:
            step["dependsOn"] = [names[i - 1]]
        steps.append(step)
    return {"id": workflow_id, "steps": steps, **fields}


def fan_out(handler: HandlerClient, workflow_id: str, width: int) -> dict[str, Any]:
    """start → width parallel items → end; start is held by the handler, so the rest wait."""
    items = [f"i{n}" for n in range(width)]
    url = handler.step_url("item")
    return {
        "id": workflow_id,
        "name": "fan-out",
        "steps": [
            {"id": "start", "url": handler.step_url("start"), "timeout": 120},
            *({"id": item, "url": url, "dependsOn": ["start"]} for item in items),
            {"id": "end", "url": handler.step_url("end"), "dependsOn": items},
        ],
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() % 10**10}"


# --------------------------------------------------------------------------- login


def test_login_refuses_a_wrong_key_and_takes_the_right_one(session: Session) -> None:
    page = session.page
    page.goto(session.server.url + "/")
    expect(page).to_have_url(session.server.url + "/ui/login")
    session.screenshot("login")
    page.fill("input[name=key]", "bk_wrong-key")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    expect(page).to_have_url(session.server.url + "/ui/login")
    page.fill("input[name=key]", session.server.api_key)
    page.click("button[type=submit]")
    expect(page).to_have_url(session.server.url + "/ui/workflows")
    expect(page.locator("h1")).to_have_text("Workflows")
    cookies = {c["name"]: c for c in session.context.cookies()}
    assert cookies["baton_session"]["httpOnly"] and cookies["baton_session"]["sameSite"] == "Strict"
    assert session.server.api_key not in cookies["baton_session"]["value"]


# --------------------------------------------------------------------------- live DAG


def test_a_running_workflow_turns_completed_without_a_reload(
    session: Session, api: BatonClient, handler: HandlerClient
) -> None:
    handler.script(slow=[{"status": 200, "delay": 2.5}])
    workflow_id = unique("live")
    body = chain(handler, workflow_id, "validate", "slow", "notify", name="order-processing")
    body["onComplete"] = handler.hook_url("done")
    api.create(body)
    session.login()
    page = session.open(f"/ui/workflows/{workflow_id}")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator('[data-step-id="slow"]')).to_have_attribute("data-status", "running")
    expect(page.locator('[data-step-id="notify"]')).to_have_attribute("data-status", "pending")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    session.screenshot("workflow-running")
    expect(page.locator("[data-workflow-status]")).to_have_attribute(
        "data-workflow-status", "completed", timeout=15_000
    )
    for step in ("validate", "slow", "notify"):
        expect(page.locator(f'[data-step-id="{step}"]')).to_have_attribute(
            "data-status", "completed"
        )
    expect(page.locator('[data-callback="on_complete"]')).to_have_attribute(
        "data-lane-status", "completed", timeout=10_000
    )
    assert page.evaluate("window.__sameDocument") is True  # never reloaded


def test_after_the_stream_drops_the_page_resyncs_from_snapshots(
    session: Session, api: BatonClient, handler: HandlerClient
) -> None:
    handler.script(slow=[{"status": 200, "delay": 1.5}])
    workflow_id = unique("resync")
    api.create(chain(handler, workflow_id, "first", "slow", "last"))
    session.login()
    # Every connection to the event stream fails: only snapshots can tell the page.
    session.page.route("**/events", lambda route: route.abort())
    page = session.open(f"/ui/workflows/{workflow_id}")
    expect(page.locator("#live")).not_to_have_attribute("data-state", "live")
    expect(page.locator("[data-workflow-status]")).to_have_attribute(
        "data-workflow-status", "completed", timeout=20_000
    )
    expect(page.locator('[data-step-id="last"]')).to_have_attribute("data-status", "completed")


# --------------------------------------------------------------------------- step panel


def test_the_step_panel_of_a_retried_step_shows_each_attempt_and_its_request(
    session: Session, api: BatonClient, handler: HandlerClient, signing_secret: str
) -> None:
    handler.script(charge=[{"status": 503, "body": "upstream busy"}, {"status": 200}])
    workflow_id = unique("retried")
    body = chain(handler, workflow_id, "validate", "charge", context={"orderId": "o-42"})
    body["steps"][1]["retries"] = {"maxAttempts": 3, "delay": 0.2, "jitter": False}
    body["steps"][1]["compensation"] = handler.step_url("refund")
    api.create(body)
    api.wait_status(workflow_id, "completed")
    session.login()
    page = session.open(f"/ui/workflows/{workflow_id}?step=charge")
    panel = page.locator("#side")
    expect(panel).to_be_visible()
    expect(page.locator("#side-title")).to_have_text("charge")
    rows = panel.locator("tr.attempt")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("200")
    expect(rows.nth(1)).to_contain_text("503")
    expect(panel).to_contain_text("Request sent")
    expect(panel.locator('pre[aria-label="Request body"]')).to_contain_text('"orderId": "o-42"')
    expect(panel.locator('pre[aria-label="Request headers"]')).to_contain_text("webhook-signature")
    rows.nth(1).click()
    expect(panel.locator("tr.detail")).to_contain_text("upstream busy")
    expect(panel.locator("tr.detail")).to_contain_text("msg_")
    session.screenshot("step-panel")
    # "Copy as curl" reproduces the request: the handler verifies it like Baton's own.
    curl = panel.locator("tr.detail details pre").text_content() or ""
    assert curl.startswith("curl ")
    before = len(handler.requests("charge"))
    result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    records = handler.requests("charge")
    assert len(records) == before + 1
    replayed, original = records[-1], records[0]  # the first attempt, opened above
    assert replayed["verified"] is True
    assert replayed["body"] == original["body"]
    assert replayed["headers"]["webhook-id"] == original["headers"]["webhook-id"]
    # Deep links open the panel of the step they name.
    page.goto(session.server.url + f"/ui/workflows/{workflow_id}?step=validate")
    expect(page.locator("#side-title")).to_have_text("validate")


# --------------------------------------------------------------------------- actions


def test_cancel_from_the_workflow_page_and_from_the_list(
    session: Session, api: BatonClient, handler: HandlerClient
) -> None:
    handler.script(hold=[{"status": 200, "delay": 20}])
    ids = [unique(f"cancel{n}") for n in range(3)]
    for workflow_id in ids:
        api.create(chain(handler, workflow_id, "hold", "after"))
    session.login()
    page = session.open(f"/ui/workflows/{ids[0]}")
    page.click("#cancel-button")
    page.get_by_role("menuitem", name="Cancel Pending").click()
    page.locator("#confirm-yes").click()
    expect(page.locator("[data-workflow-status]")).to_have_attribute(
        "data-workflow-status", "cancelled"
    )
    expect(page.locator('[data-step-id="after"]')).to_have_attribute("data-status", "cancelled")
    assert api.get(ids[0])["status"] == "cancelled"
    page.goto(session.server.url + "/ui/workflows?status=running")
    for workflow_id in ids[1:]:
        page.locator(f'tr[data-id="{workflow_id}"] .row-check').check()
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    session.screenshot("workflows-selected")
    page.locator('[data-bulk="cancel"]').click()
    page.locator("#confirm-yes").click()
    for workflow_id in ids[1:]:
        expect(
            page.locator(f'tr[data-id="{workflow_id}"] [data-workflow-status]')
        ).to_have_attribute("data-workflow-status", "cancelled")
        assert api.get(workflow_id)["status"] == "cancelled"


# --------------------------------------------------------------------------- large DAGs


def time_to_interactive(session: Session, workflow_id: str) -> tuple[float, float]:
    """(ms from navigation to the page being ready, ms for a group to open its steps)."""
    page = session.open(f"/ui/workflows/{workflow_id}")
    # The page marks the moment its graph, panels and stream are all set up.
    ready = page.evaluate("performance.getEntriesByName('baton:ready')[0].startTime")
    started = time.perf_counter()
    page.locator("[data-group-id]").first.click()
    expect(page.locator("#side .cell").first).to_be_visible()
    return ready, (time.perf_counter() - started) * 1000


def test_a_3000_step_workflow_is_interactive_within_seconds(
    session: Session, api: BatonClient, handler: HandlerClient
) -> None:
    handler.script(start=[{"status": 200, "delay": 60}])
    workflow_id = unique("large")
    api.create(fan_out(handler, workflow_id, 3000))
    session.login()
    ready, open_group = time_to_interactive(session, workflow_id)
    assert ready < LARGE_PAGE_SECONDS * 1000, ready
    assert open_group < 2000, open_group
    page = session.page
    expect(page.locator("#side .cell")).to_have_count(3000)
    expect(page.locator('[data-step-id="start"]')).to_have_attribute("data-status", "running")
    session.screenshot("large-workflow")
    page.locator('#side .cell[data-step-id="i1234"]').click()
    expect(page.locator("#side-title")).to_have_text("i1234")
    api.http.post(f"/v1/workflows/{workflow_id}/cancel", json={})


@pytest.mark.slow
@pytest.mark.parametrize("total", [100, 3000, 10_000])
def test_time_to_interactive_by_size(
    session: Session, api: BatonClient, handler: HandlerClient, total: int
) -> None:
    """The figures of docs/console.md: the page of a fan-out of ``total`` steps."""
    width = total - 2
    handler.script(start=[{"status": 200, "delay": 60}])
    workflow_id = unique(f"tti{total}")
    api.create(fan_out(handler, workflow_id, width))
    session.login()
    session.open(f"/ui/workflows/{workflow_id}")  # warm: the layout is computed once
    ready, open_group = time_to_interactive(session, workflow_id)
    html = session.page.evaluate("performance.getEntriesByType('navigation')[0].responseEnd")
    print(
        f"\n{total} steps: HTML received {html:.0f} ms, interactive {ready:.0f} ms, "
        f"group of {width} opened in {open_group:.0f} ms"
    )
    assert ready < 3 * LARGE_PAGE_SECONDS * 1000
    api.http.post(f"/v1/workflows/{workflow_id}/cancel", json={})


# --------------------------------------------------------------------------- quality


@pytest.fixture(params=["light", "dark"])
def themed(
    request: pytest.FixtureRequest, browser: Browser, baton: BatonServer, tmp_path: Path
) -> Iterator[Session]:
    """A session whose system colour scheme is light, then dark."""
    opened = Session(browser, baton, tmp_path, color_scheme=request.param)
    opened.scheme = request.param
    try:
        yield opened
        opened.check()
    finally:
        opened.close()


def test_the_console_follows_the_system_colour_scheme(
    themed: Session, api: BatonClient, handler: HandlerClient
) -> None:
    scheme = themed.scheme
    handler.script(charge=[{"status": 500}, {"status": 200, "delay": 0.5}])
    workflow_id = unique(f"theme-{scheme}")
    body = chain(handler, workflow_id, "validate", "charge", "ship", name="order-processing")
    body["steps"][1]["retries"] = {"maxAttempts": 3, "delay": 0.3, "jitter": False}
    api.create(body)
    api.wait_status(workflow_id, "completed")
    themed.login()
    background = themed.page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(v) for v in background[4:-1].split(",")[:3])
    luminance = (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255
    assert (luminance < 0.2) if scheme == "dark" else (luminance > 0.9), background
    themed.screenshot(f"workflows-{scheme}")
    themed.open(f"/ui/workflows/{workflow_id}?step=charge")
    expect(themed.page.locator("#side tr.attempt")).to_have_count(2)
    themed.screenshot(f"workflow-{scheme}")
    themed.page.click("#tab-timeline")
    themed.page.wait_for_timeout(300)
    themed.screenshot(f"timeline-{scheme}")
    themed.page.click("#tab-events")
    expect(themed.page.locator("#events-body tr").first).to_be_visible()
    themed.screenshot(f"events-{scheme}")


def serious_violations(page: Page) -> list[dict[str, Any]]:
    page.evaluate(AXE.read_text())
    result = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
        "v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))"
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def test_no_page_has_a_serious_accessibility_violation(
    themed: Session, api: BatonClient, handler: HandlerClient
) -> None:
    session = themed
    handler.script(charge=[{"status": 500}, {"status": 200}])
    workflow_id = unique("a11y")
    body = chain(handler, workflow_id, "validate", "charge", "ship")
    body["steps"][1]["retries"] = {"maxAttempts": 3, "delay": 0.2, "jitter": False}
    body["steps"][1]["compensation"] = handler.step_url("refund")
    body["onComplete"] = handler.hook_url("done")
    api.create(body)
    large = unique("a11y-large")
    handler.script(start=[{"status": 200, "delay": 30}])
    api.create(fan_out(handler, large, 200))
    api.wait_status(workflow_id, "completed")
    page = session.page
    page.goto(session.server.url + "/ui/login")
    checked: dict[str, list[dict[str, Any]]] = {"login": serious_violations(page)}
    session.login()
    checked["workflows"] = serious_violations(page)
    session.open(f"/ui/workflows/{workflow_id}?step=charge")
    expect(page.locator("#side tr.attempt")).to_have_count(2)
    checked["workflow with step panel"] = serious_violations(page)
    for tab in ("timeline", "events", "data"):
        page.click(f"#tab-{tab}")
        page.wait_for_timeout(200)
        checked[tab] = serious_violations(page)
    session.open(f"/ui/workflows/{large}")
    page.locator("[data-group-id]").first.click()
    expect(page.locator("#side .cell").first).to_be_visible()
    checked["group panel"] = serious_violations(page)
    api.http.post(f"/v1/workflows/{large}/cancel", json={})
    found = {name: violations for name, violations in checked.items() if violations}
    assert found == {}, json.dumps(found, indent=1)


def test_the_graph_is_usable_from_the_keyboard(
    session: Session, api: BatonClient, handler: HandlerClient
) -> None:
    workflow_id = unique("keys")
    api.create(
        {
            "id": workflow_id,
            "steps": [
                {"id": "a", "url": handler.step_url("a")},
                {"id": "b", "url": handler.step_url("b"), "dependsOn": ["a"]},
                {"id": "c", "url": handler.step_url("c"), "dependsOn": ["a"]},
                {"id": "d", "url": handler.step_url("d"), "dependsOn": ["b", "c"]},
            ],
        }
    )
    api.wait_status(workflow_id, "completed")
    session.login()
    page = session.open(f"/ui/workflows/{workflow_id}")
    page.locator('[data-step-id="a"]').focus()
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("document.activeElement.dataset.stepId")
    assert focused in ("b", "c")
    page.keyboard.press("ArrowDown" if focused == "b" else "ArrowUp")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.stepId") == "d"
    page.keyboard.press("Enter")
    expect(page.locator("#side-title")).to_have_text("d")
    page.keyboard.press("Escape")
    expect(page.locator("#side")).to_be_hidden()
    assert page.evaluate("document.activeElement.dataset.stepId") == "d"
    page.keyboard.press("2")
    expect(page.locator("#tab-timeline")).to_have_attribute("aria-selected", "true")
