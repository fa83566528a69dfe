"""The timeline page in headless Chromium: the runs list, the waterfall, live updates, escaping.

Locally these tests skip when Chromium (Debian's `chromium`) or playwright is missing; in CI
(`CI` set) that is a failure. The browser is never downloaded: playwright drives the system's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor
from aioprefactor import span
from aioprefactor.testing import LocalPrefactor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from playwright.async_api import Browser, Page

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VERSION = {"name": "Browser bot", "external_identifier": "0.9.0"}
TIMEOUT_MS = 30_000


def chromium() -> str:
    """Return the Chromium executable, or skip (fail in CI) when there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "Chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the browser tests: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium driven by playwright, closed after the test."""
    executable = chromium()
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI needs playwright (the `test` extra)", pytrace=False)
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page with a default timeout; page errors fail the test."""
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    opened = await context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        await context.close()
    assert [] == errors


async def record(api: LocalPrefactor, agent_id: str, build: Any) -> str:
    """Record one run whose body is `build()`; return its id."""
    async with aioprefactor.Client(api_url=api.url, api_token=api.token) as client:
        async with client.agent_instance(agent_id=agent_id, agent_version=VERSION) as run:
            await build()
        await client.flush()
    assert run.id is not None
    return run.id


async def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    """Save a screenshot of the page under the test's tmp dir."""
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.asynccontextmanager
async def served(token: str) -> AsyncIterator[str]:
    """Run `python -m aioprefactor serve` in a subprocess; yield its URL; stop it afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioprefactor",
        "serve",
        "--port",
        "0",
        "--token",
        token,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
        match = re.search(r"listening on (http://\S+)", line)
        assert match is not None, line
        yield match.group(1)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.communicate()


async def test_the_list_shows_the_runs_the_quickstart_recorded(page: Page, tmp_path: Path) -> None:
    """Run the quickstart against `serve`; its printed address lists its three runs."""
    async with served("browser-token") as url:
        env = {**os.environ, "PREFACTOR_API_URL": url, "PREFACTOR_API_TOKEN": "browser-token"}
        quickstart = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / "quickstart.py"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(quickstart.communicate(), timeout=120)
        assert 0 == quickstart.returncode, stderr.decode()
        match = re.search(r"See these runs on the timeline: (\S+)", stdout.decode())
        assert match is not None, stdout.decode()
        assert f"{url}/?token=browser-token" == match.group(1)

        await page.goto(match.group(1))
        assert f"{url}/" == page.url  # the token left the address bar
        rows = page.locator("#runs tr")
        await rows.nth(2).wait_for()
        statuses = await rows.evaluate_all("rows => rows.map(r => r.dataset.status)")
        assert ["cancelled", "failed", "complete"] == statuses  # newest first
        agents = await page.locator("#runs tr td:first-child").all_text_contents()
        assert ["quickstart-agent"] * 3 == agents
        badge = page.locator("#runs tr[data-status=failed] .status")
        assert "rgb(210, 60, 60)" == await badge.evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        shot = await screenshot(page, tmp_path, "runs")
    assert shot.read_bytes().startswith(b"\x89PNG")


async def test_the_waterfall_shows_the_span_tree_in_order(page: Page, tmp_path: Path) -> None:
    """An instance's page nests spans by parent, in start order, bars inside their parent's."""
    async with LocalPrefactor() as api:

        async def body() -> None:
            async with span("agent:root", payload={"step": "root"}):
                async with (
                    span("agent:first", payload={"step": "first"}),
                    span("agent:leaf", payload={"step": "leaf"}) as leaf,
                ):
                    await asyncio.sleep(0.02)
                    leaf.set_result({"answer": 42})
                async with span("agent:second", payload={"step": "second"}) as second:
                    await asyncio.sleep(0.02)
                    second.fail({"error": {"type": "ToolError", "message": "down"}})

        run_id = await record(api, "waterfall-bot", body)
        await page.goto(f"{api.url}/instances/{run_id}?token={api.token}")
        rows = page.locator(".span-row")
        await rows.nth(3).wait_for()
        tree = await rows.evaluate_all(
            "rows => rows.map(r => [r.querySelector('.name').textContent, +r.dataset.depth])"
        )
        expected = [["agent:root", 0], ["agent:first", 1], ["agent:leaf", 2], ["agent:second", 1]]
        assert expected == tree
        boxes = [await rows.nth(i).locator(".bar").bounding_box() for i in range(4)]
        assert all(box is not None for box in boxes)
        root, first, leaf, second = (box for box in boxes if box is not None)
        assert root["x"] <= first["x"] <= leaf["x"]
        assert leaf["x"] + leaf["width"] <= first["x"] + first["width"] + 1
        assert first["x"] + first["width"] <= second["x"] + 1  # the second starts after
        failed_bar = rows.nth(3).locator(".bar")
        assert "rgb(210, 60, 60)" == await failed_bar.evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )

        await rows.nth(2).click()
        assert {"step": "leaf"} == json.loads(await page.locator("#payload").text_content() or "")
        assert {"answer": 42} == json.loads(await page.locator("#result").text_content() or "")
        assert 0 == await page.locator("#ending").count()  # it completed: nothing to explain
        assert "null" not in (await page.locator("main").text_content() or "")
        await screenshot(page, tmp_path, "waterfall")


async def test_a_failed_or_terminated_run_says_why(page: Page) -> None:
    """The page of a failed run names the failing span's error; a terminated one its reason."""
    async with LocalPrefactor() as api:

        async def failing() -> None:
            async with span("agent:tool"):
                raise TimeoutError("slow tool")  # recorded as the span's error

        with contextlib.suppress(TimeoutError):
            await record(api, "failing-bot", failing)
        failed = api.instances()[-1]["id"]
        await page.goto(f"{api.url}/instances/{failed}?token={api.token}")
        ending = page.locator("#ending")
        expected = "Failed in agent:tool: builtins.TimeoutError: slow tool"
        assert expected == await ending.text_content()

        scope = aioprefactor.Client(api_url=api.url, api_token=api.token)
        async with scope as client:
            registered = await client.agent_instances.register(
                agent_id="live-bot",
                agent_version=VERSION,
                agent_schema_version={"external_identifier": "s"},
            )
        api.terminate(registered.id, "stopped: runaway loop")
        await page.goto(f"{api.url}/instances/{registered.id}")
        assert "Terminated: stopped: runaway loop" == await ending.text_content()


async def test_a_run_recorded_after_the_page_opened_appears_without_reload(
    page: Page, tmp_path: Path
) -> None:
    """The list updates live: a new run shows up while the same document stays loaded."""
    async with LocalPrefactor() as api:
        await page.goto(api.timeline_url)
        await page.get_by_text("No runs yet").wait_for()
        await page.evaluate("window.__sameDocument = 'yes'")

        async def body() -> None:
            async with span("agent:step"):
                pass

        run_id = await record(api, "late-bot", body)
        await page.locator(f'#runs tr[data-instance-id="{run_id}"]').wait_for()
        assert "yes" == await page.evaluate("window.__sameDocument")
        await screenshot(page, tmp_path, "live")


async def test_a_script_in_a_payload_is_shown_as_text_and_never_runs(
    page: Page, tmp_path: Path
) -> None:
    """Markup in payloads, results and names renders as text; no injected script executes."""
    attack = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
    async with LocalPrefactor() as api:

        async def body() -> None:
            async with span("agent:<b>tool</b>", payload={"html": attack}) as step:
                step.set_result({"html": attack})

        run_id = await record(api, "<i>bot</i>", body)
        await page.goto(api.timeline_url)
        await page.locator("#runs tr").first.wait_for()
        assert "<i>bot</i>" == await page.locator("#runs tr td a").first.text_content()
        await page.goto(f"{api.url}/instances/{run_id}")
        await page.locator(".span-row").first.click()
        payload = json.loads(await page.locator("#payload").text_content() or "")
        assert {"html": attack} == payload
        assert "agent:<b>tool</b>" == await page.locator(".span-row .name").text_content()
        await screenshot(page, tmp_path, "escaped")
        assert await page.evaluate("window.__pwned === undefined")
        assert 0 == await page.locator("img").count()
        assert 0 == await page.locator("main script, main b, main i").count()
