"""README screenshots (only with --screenshots DIR): home page, volume manager, broadcast page, a toast, the policies
page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ..support.livestack import ADMIN, PASSWORD
from .pages import BroadcastPage, HomePage, JupyterLab, LoginPage, PoliciesPage

pytestmark = pytest.mark.e2e


@pytest.fixture
def folder(request) -> Path:
    target = request.config.getoption("--screenshots")
    if not target:
        pytest.skip("README screenshots are made only with --screenshots DIR")
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_readme_screenshots(live, make_user, admin_http, browser, page, folder):
    make_user("dana").start("dana")
    LoginPage(page, live.url).login("dana", PASSWORD)
    home = HomePage(page, live.url)
    home.goto()
    expect(page.get_by_role("button", name="Restart server")).to_be_visible()
    page.screenshot(path=folder / "home-restart.png")

    lab_page = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 800}).new_page()
    LoginPage(lab_page, live.url).login("dana", PASSWORD)
    lab = JupyterLab(lab_page, live.url, "dana")
    lab.open()

    admin = browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 900}).new_page()
    LoginPage(admin, live.url).login(ADMIN, PASSWORD)
    broadcast = BroadcastPage(admin, live.url)
    expect(broadcast.send("Hub maintenance tonight at 18:00: save your work", type_="warning")).to_contain_text(
        "Delivered"
    )
    admin.screenshot(path=folder / "broadcast.png")
    admin_http.api("PUT", "hubforge/policies/research", json={"mem_limit": "16G", "gpus": 1, "folder": "rw"})
    admin_http.api("POST", "groups/research/users", json={"users": ["dana"]})
    expect(PoliciesPage(admin, live.url).set_memory("students", "2G")).to_contain_text("Saved")
    admin.reload()
    admin.screenshot(path=folder / "policies.png", full_page=True)
    expect(lab.notification("Hub maintenance tonight")).to_be_in_viewport(ratio=1, timeout=3_000)  # slid in
    lab_page.screenshot(path=folder / "lab-notification.png")

    home.stop()
    home.manage_volumes()
    expect(page.get_by_role("button", name="Reset selected volumes")).to_be_visible()
    page.screenshot(path=folder / "volumes.png")


def test_activity_screenshot(live, make_user, admin_http, browser, folder):
    """The Activity page with a busy lab and users who run nothing (docs/howto/activity.md)."""
    erin = make_user("erin")
    make_user("femi")
    admin_http.api("POST", "groups/physics")
    admin_http.api("POST", "groups/physics/users", json={"users": ["erin", "femi"]})
    erin.start("erin")
    busy = "import time\nend = time.time() + 120\nwhile time.time() < end:\n    pass\n"
    live.lab("erin").exec_run(["python3", "-c", busy], detach=True)
    admin = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 650}).new_page()
    LoginPage(admin, live.url).login(ADMIN, PASSWORD)
    admin.goto(live.url + "hub/hubforge/activity")
    row = admin.locator('tr[data-user="erin"][data-running="1"]')
    # the second collector run gives a CPU figure, and the sparkline a line
    expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^\d+\.\d$"), timeout=60_000)
    expect(row.locator("td").nth(7)).to_contain_text("home", timeout=90_000)  # the shared df, at most once a minute
    admin.screenshot(path=folder / "activity.png")
    home = browser.new_context(ignore_https_errors=True).new_page()  # erin's own figures on her home page
    LoginPage(home, live.url).login("erin", PASSWORD)
    HomePage(home, live.url).goto()
    expect(home.locator("#my-cpu")).to_have_text(re.compile(r"^\d+\.\d %$"))
    expect(home.locator("#my-week")).to_contain_text("CPU h")
