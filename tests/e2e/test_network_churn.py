"""Labs starting and stopping leave a browser on the Docker host alone (issue 31).

Chromium watches the host's network: every address that comes or goes on any interface -- a new bridge's gateway, a
container's host-side veth and its IPv6 link-local address -- is a "network change", and it fails the requests it is
opening at that moment with net::ERR_NETWORK_CHANGED. A team lead who runs the hub on their workstation and works in
it there would see blank labs whenever colleagues start theirs. So: while one user works in JupyterLab, 20 other labs
start and stop, and neither a request of that page fails nor does the browser see a single network change.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import expect

from ..support.livestack import PASSWORD, admin_api
from .conftest import TIMEOUT_MS
from .pages import JupyterLab, LoginPage, network_losses

OTHERS = [f"churn{i:02d}" for i in range(20)]
AT_ONCE = 4  # labs starting or stopping side by side


def address_changes(netlog: str, since: float, until: float) -> list[float]:
    """When (epoch seconds) Chromium saw the host's addresses change, between `since` and `until`, from its net log."""
    with open(netlog) as f:
        text = f.read().rstrip().rstrip(",")
    data = json.loads(text if text.endswith("}") else text + "]}")  # a log still open lacks its closing brackets
    constants = data["constants"]
    wanted = constants["logEventTypes"]["NETWORK_IP_ADDRESSES_CHANGED"]
    offset = int(constants["timeTickOffset"])
    seen = [(int(e["time"]) + offset) / 1000 for e in data["events"] if e["type"] == wanted]
    return [t for t in seen if since <= t <= until]


def churn(api, names: list[str]) -> None:
    """Each lab starts, answers through the proxy, and stops; AT_ONCE at a time."""

    def cycle(name: str) -> None:
        api.start(name)
        api.stop(name)

    with ThreadPoolExecutor(AT_ONCE) as pool:
        list(pool.map(cycle, names))


@pytest.fixture(scope="module")
def others(live, admin_http):
    """20 users who have used their lab before (their first start made their network and its sandbox)."""
    api = admin_api(live, admin_http)
    response = api.request("POST", "hub/api/users", json={"usernames": OTHERS})
    assert response.status_code in (201, 409), response.text
    churn(api, OTHERS)
    yield api
    for name in OTHERS:  # the shared stack's other flows count its users
        api.request("DELETE", f"hub/api/users/{name}")


def test_labs_starting_and_stopping_do_not_disturb_a_browser_on_the_host(
    live, make_user, others, browser_type, browser_type_launch_args, tmp_path
):
    make_user("worker")
    netlog = str(tmp_path / "netlog.json")
    args = [*browser_type_launch_args.get("args", []), f"--log-net-log={netlog}"]
    browser = browser_type.launch(**{**browser_type_launch_args, "args": args})
    try:
        page = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        LoginPage(page, live.url).login("worker", PASSWORD)
        lab = JupyterLab(page, live.url, "worker")
        lab.open()
        lab.new_notebook()
        expect(lab.run("1 + 1")).to_have_text("2", timeout=60_000)
        lost = network_losses(page)
        lost.clear()
        # the page keeps asking its lab, as JupyterLab's own polls and a user's saves do, all through the churn
        page.evaluate(
            """(path) => { window.asked = 0; window.failed = [];
                const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
                const ask = async () => { while (!window.quiet) {
                    try {
                        const answer = await fetch(path + '?t=' + Math.random(),
                            {cache: 'no-store', headers: {'X-XSRFToken': decodeURIComponent(xsrf)}});
                        if (answer.ok) window.asked++; else window.failed.push('HTTP ' + answer.status); }
                    catch (e) { window.failed.push(String(e)); }
                    await new Promise(r => setTimeout(r, 50)); } };
                ask(); ask(); }""",
            "/user/worker/api/contents",  # the lab's own origin (its subdomain, where labs have their own)
        )
        since = time.time()
        done = threading.Event()
        worker = threading.Thread(target=lambda: (churn(others, OTHERS), done.set()), daemon=True)
        worker.start()
        cells = 0
        while not done.is_set() and cells < 200:  # the user runs cells while the others' labs come and go
            cells += 1
            lab.run(f"{cells} * 3")  # each answer differs from the one before: the last output is this cell's
            expect(page.locator(".jp-OutputArea-output").last).to_have_text(str(cells * 3), timeout=60_000)
        worker.join(timeout=600)
        until = time.time()
        page.evaluate("() => { window.quiet = true; }")
        asked, failed = page.evaluate("() => [window.asked, window.failed]")
    finally:
        browser.close()
    assert done.is_set(), "the 20 labs did not all start and stop"
    assert asked > 50 and cells > 1, f"the page asked its lab {asked} times and ran {cells} cells: too few to tell"
    assert not lost, f"requests lost to a network change while labs started and stopped: {lost}"
    assert not failed, f"the page's requests failed: {failed[:3]}"
    changes = address_changes(netlog, since, until)
    assert not changes, f"the browser saw the host's network change {len(changes)} times while labs started and stopped"
