"""The swarm engine in a browser: sign up, be approved, spawn, run a cell, restart from the home page."""

from __future__ import annotations

import docker
import pytest
from playwright.sync_api import expect

from ..support.livestack import ADMIN, PASSWORD, claim_admin, start_stack, stop_stack
from .pages import AuthorizePage, HomePage, JupyterLab, LoginPage, SignupPage

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def swarm_stack(tmp_path_factory):
    client = docker.from_env()
    was_member = client.info()["Swarm"]["LocalNodeState"] == "active"
    stack = start_stack(tmp_path_factory.mktemp("swarm"), engine="swarm")
    try:
        claim_admin(stack)
        yield stack
    finally:
        stop_stack(stack)
        if not was_member:
            client.swarm.leave(force=True)


def test_sign_up_spawn_run_a_cell_and_restart_on_swarm(swarm_stack, page, browser):
    live = swarm_stack
    SignupPage(page, live.url).signup("sami", PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("sent to the admin")
    admin = browser.new_context(ignore_https_errors=True).new_page()
    LoginPage(admin, live.url).login(ADMIN, PASSWORD)
    AuthorizePage(admin, live.url).approve("sami")

    LoginPage(page, live.url).login("sami", PASSWORD)  # the hub starts sami's lab service and opens it
    lab = JupyterLab(page, live.url, "sami")
    lab.wait_ready()
    lab.new_notebook()
    expect(lab.run("open('/home/lab/workspace/kept.txt', 'w').write('kept')")).to_have_text("4", timeout=60_000)
    before = live.lab("sami").id

    HomePage(page, live.url).restart()  # it waits for the home page's own reload, 0.8 s after "Restarted"
    expect(page.get_by_role("button", name="Stop My Server")).to_be_visible()
    assert live.lab("sami").id != before  # a new task of the same service
    lab.open()  # JupyterLab opens again, on the new task
    assert live.lab("sami").exec_run(["cat", "/home/lab/workspace/kept.txt"], user="lab").output == b"kept"
