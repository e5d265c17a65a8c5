"""The usage dashboard in a real headless Chromium against the real daemon: a bad key is refused on the
form; an admin key shows the numbers the JSON API returns (per company, per conversation, per day),
a company row opens into its model breakdown, live calls appear; a company key shows its own data
only; the key stays in sessionStorage; nothing is fetched from anywhere but the daemon. A screenshot
is kept in $BRIDGE_TEST_ARTIFACTS (default <repo>/test-artifacts/)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Services
from bridge.session.session import CallInfo, Session
from bridge.session.state import EndedBy
from bridge.settings import build_settings
from bridge.store.records import Usage
from tests.helpers import ACME_KEY, ACME_PHONE, ADMIN_KEY, CONNECTOR_KEY, GLOBEX_PHONE, raw_config
from tests.services import unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 30_000  # generous: a loaded 2-core machine runs the suite beside the browser


def artifacts_dir() -> Path:
    path = Path(os.environ.get("BRIDGE_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def money(text: str) -> float:
    return float(text.strip().replace("$", "").replace(",", ""))


def tokens(text: str) -> int:
    return int(text.strip().replace(",", ""))


def usage(n: int) -> Usage:
    return Usage(
        input_text_tokens=100 * n,
        input_audio_tokens=1000 * n,
        output_text_tokens=20 * n,
        output_audio_tokens=300 * n,
        responses=n,
    )


def seeded(call_id: str, company: str, created_at: float, parts: list[Any]) -> Session:
    """A finished call's session: one usage part per model that served it (a failover has two)."""
    phone = {"acme": ACME_PHONE, "globex": GLOBEX_PHONE}[company]
    session = Session(CallInfo(call_id, company, "inbound", "+34600111222", phone), created_at=created_at)
    for provider, model, used, cost in parts:
        session.begin_model(provider, model)
        session.add_usage(used, cost)
    return session


def day(offset: int) -> float:
    """Noon (UTC) `offset` days from today: inside the dashboard's default 30 days for 0..29."""
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=offset)).timestamp()


@dataclass
class Daemon:
    services: Services
    http: aiohttp.ClientSession
    requests: list[str] = field(default_factory=list)  # every URL the browser asked for
    problems: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.services.http_port}"

    async def api(self, path: str, key: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"}
        async with self.http.get(self.base + path, params=params, headers=headers) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["data"]

    async def connect(self, call_id: str, caller: str, phone: str) -> None:
        body = {
            "callId": call_id,
            "event": "connect",
            "callerPhone": caller,
            "b_number": phone,
            "websocketUrl": "ws://127.0.0.1/x",
        }
        headers = {"x-connector-api-key": CONNECTOR_KEY}
        async with self.http.post(f"{self.base}/api/voip/webhook", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()


@pytest.fixture
async def daemon(bridge_factory: Callable[..., Any]) -> AsyncIterator[Daemon]:
    services = await bridge_factory(settings=build_settings(raw_config(pending_ttl_seconds=3600)))
    calls: list[tuple[str, str, float, list[Any]]] = [
        (
            "a-failover",
            "acme",
            day(2),
            [("openai", "gpt-realtime", usage(1), 0.0123), ("gemini", "g-live", usage(2), 0.02)],
        ),
        ("a-second", "acme", day(1), [("openai", "gpt-realtime", usage(3), 0.0345)]),
        ("a-old", "acme", day(60), [("openai", "gpt-realtime", usage(7), 0.7)]),  # outside the range
        ("g-first", "globex", day(1), [("openai", "gpt-realtime", usage(5), 0.05)]),
        ("g-unpriced", "globex", day(0), [("echo", "", usage(1), None)]),
    ]
    sessions = [seeded(call_id, company, at, parts) for call_id, company, at, parts in calls]
    for session in sessions:
        services.recorder.track(session)
        session.finish(EndedBy.CALLER)
    await services.recorder.flush()
    async with aiohttp.ClientSession() as http:
        daemon = Daemon(services, http)
        await daemon.connect("live-acme", "+34600111222", ACME_PHONE)
        await daemon.connect("live-globex", "+15551234567", GLOBEX_PHONE)
        yield daemon


@pytest.fixture
async def page(tmp_path: Path, daemon: Daemon) -> AsyncIterator[Any]:
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMIUM)):
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("Python Playwright is not installed (pip install playwright)")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            locale="en-US",
            timezone_id="UTC",
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", lambda request: daemon.requests.append(request.url))
            page.on("console", lambda m: daemon.problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: daemon.problems.append(str(error)))
            yield page
        finally:
            await context.close()


async def cells(page: Any, selector: str) -> list[str]:
    return [text.strip() for text in await page.locator(selector).all_text_contents()]


async def range_params(page: Any) -> dict[str, str]:
    """The range the page asks for, read from its inputs (so a test run across midnight agrees)."""
    start = await page.input_value("#start")
    end = datetime.fromisoformat(await page.input_value("#end")) + timedelta(days=1)
    return {"start_date": f"{start}T00:00:00Z", "end_date": f"{end:%Y-%m-%d}T00:00:00Z"}


def assert_row(texts: list[str], row: dict[str, Any], *, with_calls: bool = True) -> None:
    """The sums' cells (calls, tokens in and out, cost) equal the API's row."""
    names = ["input_text_tokens", "output_text_tokens", "input_audio_tokens", "output_audio_tokens"]
    if with_calls:
        names.insert(0, "calls")
    assert [tokens(t) for t in texts[: len(names)]] == [row[n] for n in names], (texts, row)
    assert money(texts[len(names)]) == pytest.approx(row["estimated_cost_usd"], abs=5e-5)


async def test_the_dashboard_shows_the_apis_numbers(daemon: Daemon, page: Any) -> None:
    await page.goto(daemon.base + "/dashboard")
    # A bad key: an error on the form, nothing else.
    await page.fill("#key", "not-a-key")
    await page.click("#login-button")
    await page.locator("#login-error").filter(has_text="neither").wait_for()
    assert await page.locator("#board").is_hidden()

    # The admin: every company.
    await page.fill("#key", ADMIN_KEY)
    await page.click("#login-button")
    await page.locator("#companies-body tr[data-company]").first.wait_for()
    await page.locator("#conversations-body tr[data-call]").first.wait_for()
    assert await page.input_value("#key") == ""
    params = await range_params(page)

    companies = await daemon.api("/api/admin/usage", ADMIN_KEY, group_by="company", **params)
    assert [r["company_id"] for r in companies["rows"]] == ["acme", "globex"]
    for row in companies["rows"]:
        shown = await cells(page, f'#companies-body tr[data-company="{row["company_id"]}"] td')
        assert_row(shown, row)
    total = await page.locator("#totals div").filter(has_text="Estimated cost").locator("dd").inner_text()
    assert money(total) == pytest.approx(companies["totals"]["estimated_cost_usd"], abs=5e-5)

    conversations = await daemon.api("/api/admin/usage", ADMIN_KEY, group_by="conversation", **params)
    shown_calls = await page.locator("#conversations-body tr").evaluate_all(
        "rows => rows.map(r => r.dataset.call)"
    )
    assert shown_calls == [r["call_id"] for r in conversations["rows"]]
    assert "a-old" not in shown_calls  # outside the range
    for row in conversations["rows"]:
        shown = await cells(page, f'#conversations-body tr[data-call="{row["call_id"]}"] td')
        assert shown[1] == row["company_id"]
        assert_row(shown[2:], row, with_calls=False)

    days = await daemon.api("/api/admin/usage", ADMIN_KEY, group_by="day", **params)
    assert len(days["rows"]) == 3
    for row in days["rows"]:
        shown = await cells(page, f'#days-body tr[data-day="{row["day"]}"] td')
        assert_row(shown, row)
        # The chart's bar for the day says the same on hover.
        title = await page.locator(f'#chart rect[data-day="{row["day"]}"] title').text_content()
        assert title.startswith(f"{row['day']}: $")
        assert money(title.split(": ")[1].split(",")[0]) == pytest.approx(row["estimated_cost_usd"], abs=5e-5)
    assert await page.locator("#chart rect.bar").count() == 30  # every day of the range, empty ones too

    # A company row opens into its model breakdown, and closes again.
    await page.click('#companies-body tr[data-company="acme"] button')
    await page.locator('tr[data-breakdown="acme"] tr[data-model]').first.wait_for()
    models = await daemon.api("/api/admin/usage", ADMIN_KEY, group_by="model", company_id="acme", **params)
    assert {(r["provider"], r["model"]) for r in models["rows"]} == {
        ("openai", "gpt-realtime"),
        ("gemini", "g-live"),
    }
    for row in models["rows"]:
        selector = f'tr[data-breakdown="acme"] tr[data-model="{row["provider"]}/{row["model"]}"] td'
        shown = await cells(page, selector)
        assert shown[0] == row["model"]
        assert_row(shown[1:], row)
    button = page.locator('#companies-body tr[data-company="acme"] button')
    assert await button.get_attribute("aria-expanded") == "true"

    # Live calls of every company, with their state.
    await page.locator('#live-body tr[data-call="live-acme"]').wait_for()
    await page.locator('#live-body tr[data-call="live-globex"]').wait_for()
    live = await cells(page, '#live-body tr[data-call="live-acme"] td')
    assert live[:3] == ["acme", "inbound", "pending"]

    await page.screenshot(path=str(artifacts_dir() / "dashboard.png"), full_page=True)

    # The key: in this tab's sessionStorage only.
    stored = await page.evaluate(
        "() => [sessionStorage.getItem('bridge.dashboard.key'), localStorage.length, document.cookie]"
    )
    assert stored == [ADMIN_KEY, 0, ""]
    await button.click()
    assert await page.locator('tr[data-breakdown="acme"]').count() == 0

    # A narrower range: every table and the chart follow it.
    end = datetime.fromisoformat(await page.input_value("#end"))
    await page.fill("#start", f"{end - timedelta(days=1):%Y-%m-%d}")
    await page.click("#range button[type=submit]")
    await page.locator('#conversations-body tr[data-call="a-failover"]').wait_for(state="detached")
    narrower = await daemon.api(
        "/api/admin/usage", ADMIN_KEY, group_by="conversation", **await range_params(page)
    )
    shown_calls = await page.locator("#conversations-body tr").evaluate_all(
        "rows => rows.map(r => r.dataset.call)"
    )
    assert shown_calls == [r["call_id"] for r in narrower["rows"]] == ["g-unpriced", "a-second", "g-first"]
    assert await page.locator("#chart rect.bar").count() == 2
    await page.fill("#start", params["start_date"][:10])  # back to the last 30 days
    await page.click("#range button[type=submit]")
    await page.locator('#conversations-body tr[data-call="a-failover"]').wait_for()

    # Log out: the key is forgotten.
    await page.click("#logout")
    await page.locator("#login").wait_for()
    assert await page.evaluate("() => sessionStorage.length") == 0
    assert await page.locator("#board").is_hidden()

    # A company key: its own view only.
    await page.fill("#key", ACME_KEY)
    await page.click("#login-button")
    await page.locator("#models-body tr[data-model]").first.wait_for()
    await page.locator("#conversations-body tr[data-call]").first.wait_for()
    await page.locator('#live-body tr[data-call="live-acme"]').wait_for()
    assert await page.locator("#companies-section").is_hidden()
    own = await daemon.api("/api/usage", ACME_KEY, group_by="conversation", **params)
    shown_calls = await page.locator("#conversations-body tr").evaluate_all(
        "rows => rows.map(r => r.dataset.call)"
    )
    assert shown_calls == [r["call_id"] for r in own["rows"]] == ["a-second", "a-failover"]
    own_models = await daemon.api("/api/usage", ACME_KEY, group_by="model", **params)
    for row in own_models["rows"]:
        shown = await cells(page, f'#models-body tr[data-model="{row["provider"]}/{row["model"]}"] td')
        assert_row(shown[1:], row)
    board = await page.locator("#board").inner_text()
    for foreign in ("globex", "g-first", "g-unpriced", "live-globex"):
        assert foreign not in board
    await page.screenshot(path=str(artifacts_dir() / "dashboard-company.png"), full_page=True)

    # Nothing but the daemon was asked, and never with a key in the URL; no script or CSP errors.
    assert daemon.requests
    for url in daemon.requests:
        assert url.startswith(daemon.base + "/"), url
        assert ADMIN_KEY not in url
        assert ACME_KEY not in url
    assert [p for p in daemon.problems if "401" not in p] == []
