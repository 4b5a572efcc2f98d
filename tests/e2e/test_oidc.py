"""Signing in with the organisation's identity provider, in Chromium: the provider's own login page, JupyterLab and a
cell, a restart from the home page, logout at the hub and the provider, and a refusal for someone outside the group."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from ..support.idp import Idp, prepare
from ..support.livestack import start_stack, stop_stack
from .conftest import RESULTS
from .pages import HomePage, HubPage, JupyterLab, settle_network, wait_for_lab

pytestmark = pytest.mark.e2e
TEAM = "research"
PASSWORD = "an-Idp-passw0rd"


@pytest.fixture(scope="module")
def oidc_stack(tmp_path_factory, request):
    idp = Idp(tmp_path_factory.mktemp("idp"))
    idp.add_user("grace", PASSWORD, [TEAM])
    idp.add_user("eve", PASSWORD, ["visitors"])
    live = start_stack(
        tmp_path_factory.mktemp("oidc"),
        idp.env(OIDC_ALLOWED_GROUPS=TEAM, OIDC_LOGIN_NAME="Example IdP", OIDC_LOGOUT_PROVIDER="1"),
        before=prepare(idp),
    )
    yield live, idp
    if getattr(request.session, "stack_failed", False):
        live.dump_logs(RESULTS / "logs" / live.project)
    stop_stack(live)


class ProviderLoginPage(HubPage):
    """The hub's login page has one button; the provider's own page asks for the password."""

    def sign_in(self, username: str, password: str) -> None:
        self.open("hub/login")
        self.page.get_by_role("button", name="Sign in with Example IdP").click()
        expect(self.page.get_by_role("heading", name=re.compile("sign in", re.I))).to_be_visible()
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        settle_network()
        self.page.get_by_role("button", name="Sign in").click()


def test_sign_in_at_the_provider_run_a_cell_restart_and_log_out(oidc_stack, page: Page):
    live, idp = oidc_stack
    ProviderLoginPage(page, live.url).sign_in("grace", PASSWORD)
    wait_for_lab(page)  # back at the hub, which starts grace's lab and opens it
    lab = JupyterLab(page, live.url, "grace")
    lab.wait_ready()
    lab.new_notebook()
    expect(lab.run("print(sum(range(10)))")).to_have_text("45", timeout=60_000)
    before = live.lab("grace").id

    HomePage(page, live.url).restart()
    assert live.lab("grace").id == before  # the same container, restarted: files and volumes stay

    HubPage(page, live.url).open("hub/logout")  # the hub's session ends, and the provider asks about its own
    page.get_by_role("button", name="Yes, sign me out").click()
    expect(page).to_have_url(re.compile(re.escape(live.url)))
    HubPage(page, live.url).open("hub/home")
    expect(page).to_have_url(re.compile(r"/hub/login"))
    page.get_by_role("button", name="Sign in with Example IdP").click()
    expect(page.get_by_label("Password")).to_be_visible()  # no silent sign-in: the provider's session ended too


def test_someone_outside_the_group_sees_the_refusal(oidc_stack, page: Page):
    live, _ = oidc_stack
    ProviderLoginPage(page, live.url).sign_in("eve", PASSWORD)
    expect(page.get_by_text(re.compile("You signed in at the identity provider as eve"))).to_be_visible()
    expect(page.get_by_text(re.compile(f"lets in only members of {TEAM}"))).to_be_visible()
