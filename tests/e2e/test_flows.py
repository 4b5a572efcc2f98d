"""What hubforge's users do every day, in a real browser against a live stack."""

from __future__ import annotations

import re

import docker
import pytest
from playwright.sync_api import expect

from ..support.hubclient import HubSession
from ..support.livestack import ADMIN, PASSWORD
from .pages import AuthorizePage, HomePage, JupyterLab, LoginPage, SignupPage, VolumesPage, navigate

pytestmark = pytest.mark.e2e


@pytest.mark.claims_admin
def test_admin_signs_up_is_approved_at_once_and_sees_admin_pages(live, page):
    signup = SignupPage(page, live.url)
    signup.signup(ADMIN, PASSWORD, bootstrap_secret="not-the-secret")
    expect(page.get_by_role("alert")).to_contain_text("needs the bootstrap secret")
    signup.signup(ADMIN, PASSWORD, bootstrap_secret=live.bootstrap_secret())
    expect(page.get_by_role("alert")).to_contain_text("successful")
    LoginPage(page, live.url).login(ADMIN, PASSWORD)
    navigate(page, live.url + "hub/admin")
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    expect(page.get_by_role("link", name="Authorize users")).to_be_visible()
    expect(page.get_by_role("link", name="Broadcast")).to_be_visible()


def test_user_signs_up_waits_for_approval_and_logs_in(live, admin_http, page, browser):
    SignupPage(page, live.url).signup("pat", PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("sent to the admin")
    LoginPage(page, live.url).login("pat", PASSWORD)
    expect(page.get_by_text(re.compile("has not been authorized", re.I))).to_be_visible()

    admin = browser.new_context(ignore_https_errors=True).new_page()
    LoginPage(admin, live.url).login(ADMIN, PASSWORD)
    AuthorizePage(admin, live.url).approve("pat")

    LoginPage(page, live.url).login("pat", PASSWORD)  # in: the hub starts pat's server and opens it
    expect(page).to_have_url(re.compile(r"/user/pat/lab"))


def test_admin_discards_a_pending_signup_by_typing_its_name(live, admin_http, browser):
    HubSession(live.url).signup("quinn", PASSWORD)
    admin = browser.new_context(ignore_https_errors=True).new_page()
    LoginPage(admin, live.url).login(ADMIN, PASSWORD)
    AuthorizePage(admin, live.url).discard("quinn")
    expect(admin.get_by_role("button", name="Approve quinn", exact=True)).to_have_count(0)
    expect(admin.get_by_text("their files are gone")).to_be_visible()  # the page says what discard deletes


def test_spawn_notebook_and_isolation(live, make_user, page):
    make_user("quinn")
    other = make_user("rosa")
    LoginPage(page, live.url).login("quinn", PASSWORD)
    HomePage(page, live.url).start()
    lab = JupyterLab(page, live.url, "quinn")
    lab.wait_ready()
    lab.new_notebook()
    expect(lab.run("2 + 2")).to_have_text("4", timeout=60_000)

    other.start("rosa")
    quinn, rosa = live.lab("quinn"), live.lab("rosa")
    assert quinn.id != rosa.id
    volumes = lambda c: {m["Name"] for m in c.attrs["Mounts"] if m["Type"] == "volume" and "shared" not in m["Name"]}  # noqa: E731
    assert volumes(quinn) and not volumes(quinn) & volumes(rosa)


def test_restart_keeps_container_files_and_gives_a_new_kernel(live, make_user, page):
    api = make_user("sol")
    api.start("sol")
    api.request("PUT", "user/sol/api/contents/kept.txt", json={"type": "file", "format": "text", "content": "kept"})
    kernel = api.request("POST", "user/sol/api/kernels", json={"name": "python3"}).json()["id"]
    before = live.lab("sol").id

    LoginPage(page, live.url).login("sol", PASSWORD)
    HomePage(page, live.url).restart()
    expect(page.get_by_role("button", name="Stop My Server")).to_be_visible()

    assert live.lab("sol").id == before
    assert api.request("GET", "user/sol/api/contents/kept.txt").json()["content"] == "kept"
    assert kernel not in {k["id"] for k in api.request("GET", "user/sol/api/kernels").json()}


def test_volume_reset_from_the_ui(live, make_user, page):
    api = make_user("tess")
    api.start("tess")
    lab = live.lab("tess")
    for path in ("/home/lab/workspace/w.txt", "/home/lab/h.txt", "/mnt/shared/tess.txt"):
        lab.exec_run(["sh", "-c", f"echo x > {path}"], user="lab")
    LoginPage(page, live.url).login("tess", PASSWORD)
    home = HomePage(page, live.url)
    home.goto()
    expect(page.get_by_role("button", name="Manage volumes")).to_have_count(0)  # not while running
    refused = api.request("POST", "hub/api/hubforge/users/tess/volumes/reset", json={"volumes": ["workspace"]})
    assert refused.status_code == 409

    home.stop()  # no reload after it: the page itself stops offering "Restart server" (issue 29, part 4)
    expect(page.get_by_role("button", name="Restart server")).to_have_count(0)
    home.manage_volumes(reload=False)
    expect(VolumesPage(page, live.url).reset(["workspace"])).to_contain_text("workspace: removed")
    api.start("tess")
    check = live.lab("tess").exec_run(
        ["sh", "-c", "ls /home/lab/workspace/w.txt /home/lab/h.txt /mnt/shared/tess.txt 2>&1"], user="lab"
    )
    text = check.output.decode()
    assert "cannot access '/home/lab/workspace/w.txt'" in text  # the workspace is fresh
    assert "/home/lab/h.txt\n" in text and "/mnt/shared/tess.txt\n" in text  # home and shared are not

    home.stop()
    home.manage_volumes()
    result = VolumesPage(page, live.url).reset(["home", "cache"])
    expect(result).to_contain_text("home: removed")
    expect(result).to_contain_text("cache: removed")


def post_from_page(page, url: str, headers: dict | None = None, body: dict | None = None) -> int:
    """A POST made by the page's own script, with its cookies: what a browser would send."""
    return page.evaluate(
        """async ([url, headers, body]) => (await fetch(url, {method: "POST", credentials: "same-origin",
               headers: {"Content-Type": "application/json", ...headers},
               body: body === null ? undefined : JSON.stringify(body)})).status""",
        [url, headers or {}, body],
    )


def test_security_negatives(live, make_user, page):
    alice, bob = make_user("ann"), make_user("ben")
    bob.start("ben")
    LoginPage(page, live.url).login("ann", PASSWORD)
    # the broadcast page and API are for admins only
    response = navigate(page, live.url + "hub/hubforge/broadcast")
    assert response.status == 403
    assert alice.request("POST", "hub/api/hubforge/broadcast", json={"message": "hi"}).status_code == 403
    # A cannot restart or reset B, with A's cookie or with A's token
    xsrf = page.evaluate("window.jhdata.xsrf_token")
    for path, body in (
        ("hubforge/users/ben/restart", None),
        ("hubforge/users/ben/volumes/reset", {"volumes": ["cache"]}),
    ):
        assert post_from_page(page, live.url + "hub/api/" + path, {"X-XSRFToken": xsrf}, body) == 403
        assert alice.request("POST", "hub/api/" + path, json=body).status_code == 403
    # a cookie POST without the XSRF token is refused
    assert post_from_page(page, live.url + "hub/api/hubforge/users/ann/restart") == 403


def test_a_dotted_username_signs_up_spawns_resets_and_restarts(live, admin_http, page):
    SignupPage(page, live.url).signup("first.last", PASSWORD)
    admin_http.approve("first.last")
    LoginPage(page, live.url).login("first.last", PASSWORD)
    home = HomePage(page, live.url)
    home.start()
    JupyterLab(page, live.url, "first.last").wait_ready()
    assert live.lab("first.last").name.endswith("-first-2elast")
    home.restart()
    home.stop()
    home.manage_volumes()
    expect(VolumesPage(page, live.url).reset(["cache"])).to_contain_text("cache: removed")


def test_gpu_off_path_here(live, make_user):
    api = make_user("uma")
    api.start("uma")
    state = live.stack.status()
    assert state["gpu"]["mode"] == "auto" and state["gpu"]["enabled"] is False
    assert state["gpu"]["probe"]["gpus"] == []
    inspected = docker.from_env().api.inspect_container(live.lab("uma").id)
    assert not inspected["HostConfig"].get("DeviceRequests")


def test_an_admin_restarts_a_users_server_from_the_admin_view(live, make_user, admin_http, page):
    api = make_user("vic")
    api.start("vic")
    before = live.lab("vic").id
    LoginPage(page, live.url).login(ADMIN, PASSWORD)
    navigate(page, live.url + "hub/admin")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Restart the server of vic").click()
    expect(page.get_by_role("status").filter(has_text="Restarted vic")).to_be_visible(timeout=90_000)
    assert live.lab("vic").id == before
