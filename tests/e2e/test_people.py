"""People, activity and audit in Chromium (issue 29): an admin makes three accounts from a pasted list; one of them
logs in with the passphrase the page showed, must change it before anything opens, and starts a lab; the admin sees
that lab on the activity page within one collection interval, and the audit page lists each step. With
--screenshots DIR the three pages are saved for the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ..support.livestack import ADMIN, PASSWORD
from .pages import ActivityPage, AuditPage, ChangePasswordPage, HomePage, LoginPage, PeoplePage, navigate

pytestmark = pytest.mark.e2e


def test_a_batch_made_user_changes_the_passphrase_starts_a_lab_and_the_admin_sees_it(
    live, admin_http, browser, page, request
):
    shots = request.config.getoption("--screenshots")
    folder = Path(shots) if shots else None
    LoginPage(page, live.url).login(ADMIN, PASSWORD)
    admin_http.api("POST", "groups/physics")
    passphrases = PeoplePage(page, live.url).create("nia physics\nomar\npilar physics\nbad/name")
    assert set(passphrases) == {"nia", "omar", "pilar"}
    expect(page.locator("#batch-refused")).to_contain_text("slash")
    expect(page.locator("#batch-csv")).to_be_visible()
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=folder / "people.png", full_page=True)

    nia = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800}).new_page()
    LoginPage(nia, live.url).login("nia", passphrases["nia"])
    expect(nia).to_have_url(re.compile(r"/hub/change-password"))
    expect(nia.get_by_role("alert")).to_contain_text("choose a password of your own")
    navigate(nia, live.url + "hub/home")  # nothing else opens
    expect(nia).to_have_url(re.compile(r"/hub/change-password"))
    ChangePasswordPage(nia, live.url).change(passphrases["nia"], "Nias-own-passw0rd")
    expect(nia).to_have_url(re.compile(r"/hub/home"))  # the hub opens where she was going
    HomePage(nia, live.url).start()

    activity = ActivityPage(page, live.url)
    activity.goto()
    # within an interval (and the seconds a start takes) the collector has listed it: its image and memory show
    expect(activity.row("nia")).to_contain_text("hubforge/lab", timeout=activity.interval_ms() + 30_000)
    expect(activity.row("nia")).to_contain_text("running")
    expect(activity.row("nia")).to_contain_text("physics")
    expect(activity.row("nia")).to_contain_text("MiB")
    if folder:
        page.set_viewport_size({"width": 1600, "height": 700})
        wait = activity.interval_ms() * 2 + 5_000  # a second reading gives CPU %, the next sizes the volumes
        expect(activity.row("nia").locator("td").nth(4)).not_to_have_text("–", timeout=wait)
        expect(activity.row("nia")).to_contain_text("home", timeout=wait)
        page.screenshot(path=folder / "activity.png", full_page=True)
        page.set_viewport_size({"width": 1400, "height": 900})

    audit = AuditPage(page, live.url)
    audit.filter(user="nia")
    steps = audit.actions()
    assert steps[::-1][:2] == ["batch-create", "password-change"], steps
    if folder:
        audit.filter(user="")
        page.screenshot(path=folder / "audit.png", full_page=True)
