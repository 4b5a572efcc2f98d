"""A hub with signup off: no signup page; the admin creates a user, sets a password, and the user logs in."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from ..support.hubclient import HubSession
from ..support.livestack import ADMIN, start_stack, stop_stack
from .pages import AdminPage, AuthorizePage, ChangePasswordPage, LoginPage, navigate, wait_for_lab

pytestmark = pytest.mark.e2e
ADMIN_PASSWORD = "Initial-admin-pw-1"


@pytest.fixture(scope="module")
def closed(tmp_path_factory, request):
    stack = start_stack(
        tmp_path_factory.mktemp("closed"), {"ENABLE_SIGNUP": "0", "JUPYTERHUB_ADMIN_PASSWORD": ADMIN_PASSWORD}
    )
    yield stack
    stop_stack(stack)


def test_admin_creates_a_user_when_signup_is_off(closed, page):
    assert navigate(page, closed.url + "hub/signup").status == 404
    LoginPage(page, closed.url).login(ADMIN, ADMIN_PASSWORD)
    AdminPage(page, closed.url).add_user("zoe")
    AuthorizePage(page, closed.url).set_password("zoe", "Zoes-own-pass-7")
    page.context.clear_cookies()
    LoginPage(page, closed.url).login("zoe", "Zoes-own-pass-7")
    # a password an admin set is only for the first login: zoe chooses her own before anything opens
    expect(page).to_have_url(re.compile(r"/hub/change-password"))
    ChangePasswordPage(page, closed.url).change("Zoes-own-pass-7", "Zoes-very-own-8")
    wait_for_lab(page)  # in: the hub starts zoe's server and opens it
    expect(page).to_have_url(re.compile(r"/user/zoe/lab"))


def test_the_admin_page_lists_every_user_past_the_apis_page_size(closed, page):
    """/hub/api/users answers at most 200 users at a time: the servers table pages through all of them."""
    admin = HubSession(closed.url)
    assert admin.login(ADMIN, ADMIN_PASSWORD).status_code == 302
    names = [f"bulk{i:03d}" for i in range(205)]
    assert admin.api("POST", "users", json={"usernames": names}).status_code == 201
    LoginPage(page, closed.url).login(ADMIN, ADMIN_PASSWORD)
    navigate(page, closed.url + "hub/admin")
    rows = page.locator("#hubforge-admin-rows tr")
    expect(rows.filter(has_text="bulk204")).to_have_count(1)
    assert rows.count() >= 206  # the admin, the users of the other test, and all 205
