"""Broadcast, seen in JupyterLab: two users' labs in two browser contexts, a subset, limits and escaping."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from ..support.livestack import ADMIN, PASSWORD
from .pages import BroadcastPage, JupyterLab, LoginPage

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_labs(live, make_user, browser):
    """Two users, each logged in with JupyterLab open in its own browser context."""
    pages = {}
    for name in ("xena", "yuri"):
        make_user(name).start(name)
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.set_default_timeout(20_000)
        LoginPage(page, live.url).login(name, PASSWORD)
        JupyterLab(page, live.url, name).open()
        pages[name] = page
    yield pages
    for page in pages.values():
        page.context.close()


@pytest.fixture
def admin_page(live, admin_http, page):
    LoginPage(page, live.url).login(ADMIN, PASSWORD)
    return BroadcastPage(page, live.url)


def test_a_warning_to_all_shows_in_both_labs(live, two_labs, admin_page):
    result = admin_page.send("Hub maintenance at 18:00", type_="warning")
    expect(result).to_contain_text("Delivered to")
    for name, page in two_labs.items():
        toast = JupyterLab(page, live.url, name).notification("Hub maintenance at 18:00")
        expect(toast).to_be_visible(timeout=3_000)


def test_a_subset_reaches_only_that_user(live, two_labs, admin_page):
    expect(admin_page.send("Only for yuri", recipients=["yuri"])).to_contain_text("Delivered to 1 of 1")
    expect(JupyterLab(two_labs["yuri"], live.url, "yuri").notification("Only for yuri")).to_be_visible(timeout=3_000)
    expect(JupyterLab(two_labs["xena"], live.url, "xena").notification("Only for yuri")).to_have_count(0)


def test_141_characters_are_refused_with_the_reason(admin_page):
    admin_page.open("hub/hubforge/broadcast")
    message = admin_page.page.get_by_label("Message")
    message.evaluate("element => element.removeAttribute('maxlength')")  # the server, not the form, is the guard
    message.fill("x" * 141)
    admin_page.page.get_by_role("button", name="Send").click()
    expect(admin_page.page.get_by_role("alert")).to_contain_text("at most 140 characters, got 141")


def test_markup_is_shown_as_text_and_no_script_runs(live, two_labs, admin_page):
    lab_page = two_labs["xena"]
    lab_page.evaluate("window.__hubforge_xss = false")
    markup = '<img src=x onerror="window.__hubforge_xss=true">'
    admin_page.send(markup, recipients=["xena"])
    expect(JupyterLab(lab_page, live.url, "xena").notification(markup)).to_be_visible(timeout=3_000)
    assert lab_page.evaluate("window.__hubforge_xss") is False
    assert lab_page.locator(".Toastify__toast img").count() == 0
