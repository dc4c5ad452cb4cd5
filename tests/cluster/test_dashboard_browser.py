"""The dashboard in a real headless browser (Debian's chromium driven by selenium through
chromium-driver) against a real 3-node cluster of OS processes: the page shows what the API
reports, and follows a kill -9 and a join by itself (server-sent events).

``.ci/run`` installs chromium and chromium-driver. Without them the test fails under CI
(``CI=true``) and is skipped elsewhere, saying what to install.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.cluster.harness import Cluster, NodeProc

HUB = "orders"
N_CHILDREN = 30
BROWSER = ("chromium", "chromium-browser")
DRIVER = "chromedriver"

#: What the page shows per node: state, incarnation, children, ring share (as displayed).
ROWS_JS = """
return Array.from(document.querySelectorAll('#nodes tbody tr[data-node]')).map(r => [
  r.dataset.node, r.dataset.state, r.querySelector('.incarnation').textContent,
  r.querySelector('.children').textContent, r.querySelector('.ring').textContent]);
"""
EVENTS_JS = """
return Array.from(document.querySelectorAll('#events li')).map(li => li.textContent);
"""


def _tools() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, BROWSER) if p), None)
    driver = shutil.which(DRIVER)
    try:
        import selenium  # noqa: F401
    except ImportError:
        browser = None
    if browser is None or driver is None:
        why = (
            "the browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver) and selenium (the dev extra)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why + ": not found under CI")
        pytest.skip(why)
    return browser, driver


@pytest.fixture
def browser() -> Iterator[Any]:
    binary, driver_path = _tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def expected_rows(snap: dict[str, Any]) -> list[list[str]]:
    """The rows the page must show for an API snapshot (the same rules as the page)."""
    hub = snap["hub"]
    local = snap["infos"][snap["node"]]["hubs"][hub]
    rows = []
    for m in snap["members"]:
        n = local["children"].get(m["name"], 0)
        share = local["ring"].get(m["name"])
        rows.append(
            [
                m["name"],
                m["state"],
                str(m["incarnation"]),
                str(n) if hub in m["hubs"] or n else "",
                "" if share is None else f"{100 * share:.1f}%",
            ]
        )
    return rows


async def api(port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/dashboard/api?hub={HUB}") as resp,
    ):
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data


async def page_matches(
    driver: Any,
    port: int,
    want: Callable[[dict[str, list[str]]], bool],
    timeout: float = 40.0,
) -> dict[str, list[str]]:
    """Poll (with a deadline) until the page shows the rows the API reports and ``want`` holds
    for them (node name -> [state, incarnation, children, ring])."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    shown: list[list[str]] = []
    reported: list[list[str]] = []
    while True:
        shown = await asyncio.to_thread(driver.execute_script, ROWS_JS)
        reported = expected_rows(await api(port))
        rows = {r[0]: r[1:] for r in shown}
        if shown == reported and want(rows):
            return rows
        if loop.time() > deadline:
            raise AssertionError(f"the page shows {shown}, the API reports {reported}")
        await asyncio.sleep(0.1)


def counts(rows: dict[str, list[str]]) -> dict[str, int]:
    return {name: int(r[2]) for name, r in rows.items() if r[2]}


async def test_the_dashboard_renders_the_cluster_and_follows_a_kill_and_a_join(
    cluster: Cluster, browser: Any
) -> None:
    nodes = await cluster.start(3, hub=HUB)
    n0 = nodes[0]
    await cluster.hub_converged(nodes)
    await n0.command(cmd="start", prefix="c", n=N_CHILDREN)
    ids = {f"c{i}" for i in range(N_CHILDREN)}
    seen = await cluster.exactly_once(nodes, ids)
    runs = {name: len(children) for name, children in seen.runs.items()}

    await asyncio.to_thread(browser.get, f"http://127.0.0.1:{n0.port}/dashboard?hub={HUB}")
    assert await asyncio.to_thread(lambda: browser.title) == "processhub dashboard"

    rows = await page_matches(
        browser,
        n0.port,
        lambda rows: counts(rows) == runs and all(r[0] == "ALIVE" for r in rows.values()),
    )
    assert sorted(rows) == ["n0", "n1", "n2"]
    shares = [float(r[3].rstrip("%")) for r in rows.values()]
    assert abs(sum(shares) - 100.0) < 0.2  # three shares of one ring

    victim = nodes[2]
    await victim.kill()
    survivors = nodes[:2]
    seen = await cluster.exactly_once(survivors, ids, timeout=40)
    runs = {name: len(children) for name, children in seen.runs.items()}
    rows = await page_matches(
        browser,
        n0.port,
        lambda rows: (
            rows["n2"][0] == "DEAD"
            and rows["n2"][2] == "0"
            and {k: v for k, v in counts(rows).items() if v} == runs
        ),
    )
    assert rows["n2"][3] == ""  # a dead node has no ring share
    events: list[str] = await asyncio.to_thread(browser.execute_script, EVENTS_JS)
    assert any("pre_cluster_leave n2" in e for e in events), events

    newcomer: NodeProc = await cluster.add("n3", hub=HUB)
    live = [*survivors, newcomer]
    seen = await cluster.exactly_once(live, ids, timeout=40)
    runs = {name: len(children) for name, children in seen.runs.items()}
    assert runs["n3"] > 0
    rows = await page_matches(
        browser,
        n0.port,
        lambda rows: (
            "n3" in rows
            and rows["n3"][0] == "ALIVE"
            and {k: v for k, v in counts(rows).items() if v} == runs
        ),
    )
    assert sorted(rows) == ["n0", "n1", "n2", "n3"]
    events = await asyncio.to_thread(browser.execute_script, EVENTS_JS)
    assert any("post_cluster_join n3" in e for e in events), events
