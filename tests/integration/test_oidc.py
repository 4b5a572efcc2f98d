"""AUTHENTICATOR=oidc against a real OpenID Connect provider (images/idp: oidc-provider) in the stack, as an operator
runs Keycloak next to the hub: discovery through the provider's service name, the code flow in the browser's
place, who gets in and who is admin from its groups, a member removed at the provider refused and stopped, a user
allowed by name refused and stopped once the name leaves OIDC_ALLOWED_USERS, a deleted user's binding to their
account at the provider gone with them, logout at the provider, self-service for provider users, and a bad issuer
refused in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import docker
import pytest

from ..support.helpers import wait_until
from ..support.hubclient import HubAPI, KernelClient, plain_get
from ..support.idp import CLIENT_ID, Idp, prepare, sign_in
from ..support.livestack import ROOT, LiveStack, current_images, start_stack, stop_stack
from .conftest import RESULTS

pytestmark = pytest.mark.integration
TEAM, ADMINS = "data-science", "hub-admins"
PASSWORD = "an-Idp-passw0rd"
RECHECK_SECONDS = 5


@pytest.fixture(scope="module")
def idp(tmp_path_factory) -> Idp:
    made = Idp(tmp_path_factory.mktemp("idp"))
    made.add_user("ada", PASSWORD, [TEAM, ADMINS])
    made.add_user("bob", PASSWORD, [TEAM])
    made.add_user("cleo", PASSWORD, [TEAM])
    made.add_user("mallory", PASSWORD, ["contractors"])
    made.add_user("dora", PASSWORD, ["guests"])  # outside the allowed groups: in by name only (OIDC_ALLOWED_USERS)
    made.add_user("finn", PASSWORD, [TEAM])
    # another account at the provider that later gets the name dora (its `sub` is its own: "dora-new")
    made.add_user("dora-new", PASSWORD, [TEAM], preferred_username="dora")
    made.add_user("admin", PASSWORD, [TEAM])  # JUPYTERHUB_ADMIN's name at a provider where anyone may pick it
    # an e-mail address with dots and unicode for a username, in a provider group named like a built-in group
    made.add_user("zoe", PASSWORD, [TEAM, "docker-sock"], preferred_username="Zoë.Müller@Example.org")
    return made


@pytest.fixture(scope="module")
def live(tmp_path_factory, idp, request):
    env = idp.env(
        OIDC_ALLOWED_GROUPS=TEAM,
        OIDC_ALLOWED_USERS="dora",
        OIDC_ADMIN_GROUPS=ADMINS,
        OIDC_LOGIN_NAME="Test IdP",
        OIDC_LOGOUT_PROVIDER="1",
        OIDC_RECHECK_SECONDS=str(RECHECK_SECONDS),
    )
    stack = start_stack(tmp_path_factory.mktemp("stack"), env, before=prepare(idp))
    yield stack
    if getattr(request.session, "stack_failed", False):
        stack.dump_logs(RESULTS / "logs" / stack.project)
    stop_stack(stack)


def landed(live: LiveStack, answer, name: str) -> bool:
    """A sign-in ends on the hub (its spawn page while the lab starts) or, with a fast lab, already in the lab, at
    the user's own subdomain (https://<name>.hub.localhost:<port>/user/<name>/lab)."""
    lab_origin = live.url.replace("://", f"://{name}.", 1)
    return answer.status_code == 200 and (answer.url.startswith(live.url) or answer.url.startswith(lab_origin))


def restart_hub_with(live: LiveStack, **changes: str | None) -> None:
    """The operator changes settings in .env (None: the line goes) and the hub is recreated to take them, as
    `invoke up` does; the labs keep running."""
    env = live.stack.options.run_dir / ".env"
    lines = [line for line in env.read_text().splitlines() if line.split("=", 1)[0] not in changes]
    lines += [f"{name}={value}" for name, value in changes.items() if value is not None]
    env.write_text("\n".join(lines) + "\n")
    before = live.hub().id
    live.compose.start()  # `docker compose up --wait`: recreates the hub, whose environment changed
    assert live.hub().id != before, "the settings change did not recreate the hub"


def signed_out(session) -> bool:
    home = session.http.get(session.url("hub/home"), allow_redirects=False, timeout=60)
    return home.status_code == 302 and "login" in home.headers["Location"]


@pytest.fixture(scope="module")
def ada(live, idp):
    session, answer = sign_in(live.url, "ada", PASSWORD)
    assert landed(live, answer, "ada"), (answer.status_code, answer.url)
    return session, HubAPI(live.url, session.new_token("ada"))


def test_the_login_page_offers_the_provider_and_no_signup(live):
    page = plain_get(live.url + "hub/login")
    assert page.status_code == 200 and "Sign in with Test IdP" in page.text
    assert "signup" not in page.text.lower()
    for path in ("hub/signup", "hub/authorize"):
        assert plain_get(live.url + path).status_code == 404, path


def test_discovery_went_through_the_service_name_and_the_browser_goes_to_the_issuer(live, idp):
    start = plain_get(live.url + "hub/oauth_login", allow_redirects=False)
    assert start.status_code == 302
    location = start.headers["Location"]
    assert location.startswith(f"{idp.issuer}/auth?") and f"client_id={CLIENT_ID}" in location
    assert "code_challenge=" in location  # PKCE
    assert "redirect_uri=https%3A%2F%2Fhub.localhost" in location


def test_a_member_signs_in_through_the_code_flow_and_runs_code(live, ada):
    session, api = ada
    assert api.user("ada")["admin"] is True  # a member of OIDC_ADMIN_GROUPS
    assert set(api.user("ada")["groups"]) >= {TEAM, ADMINS}
    api.wait_ready("ada")  # the sign-in started the lab, as JupyterHub does: the code flow ends at /hub/spawn
    assert KernelClient(api, "ada").execute("print(6 * 7)").strip() == "42"


def test_self_service_and_broadcast_work_for_provider_users(live, ada):
    session, api = ada
    restarted = session.api("POST", "hubforge/users/ada/restart")
    assert restarted.status_code == 200 and restarted.json()["status"] == "restarted", restarted.text
    volumes = session.api("GET", "hubforge/users/ada/volumes")
    assert volumes.status_code == 200 and {v["kind"] for v in volumes.json()["volumes"]} >= {"home", "workspace"}
    sent = session.api("POST", "hubforge/broadcast", json={"message": "from the provider's admin", "type": "info"})
    assert sent.status_code == 200 and sent.json()["delivered"] >= 1, sent.text


def test_an_email_username_with_unicode_gets_the_usual_rules_and_no_builtin_group_from_the_provider(live, ada):
    session, answer = sign_in(live.url, "zoe", PASSWORD)
    assert answer.status_code == 200, answer.text[:500]
    name = "zoë.müller@example.org"  # NFKC and lower case, as a signup's name
    user = ada[1].user(name)
    assert TEAM in user["groups"] and "docker-sock" not in user["groups"]  # OIDC_GROUP_MAP is empty: admins decide
    api = HubAPI(live.url, session.new_token(name))
    api.wait_ready(name)  # started by the sign-in
    lab = live.lab(name)
    assert lab.name.startswith(live.stack.options.volume_prefix + "-zo")  # escaped like a native name
    assert not any(m.get("Destination") == "/var/run/docker.sock" for m in lab.attrs["Mounts"])
    assert KernelClient(api, name).execute("import os; print(os.environ['JUPYTERHUB_USER'])").strip() == name
    api.stop(name)


def test_someone_outside_the_allowed_groups_is_refused_with_a_page_that_says_why(live, ada):
    _, answer = sign_in(live.url, "mallory", PASSWORD)
    assert answer.status_code == 403
    assert "You signed in at the identity provider as mallory" in answer.text and f"members of {TEAM}" in answer.text
    assert ada[1].request("GET", "hub/api/users/mallory").status_code == 404  # no hub user was made


def test_people_come_from_the_provider_so_the_people_api_says_so(live, ada):
    session, api = ada  # an admin, from the provider's admin group
    for method, path in (("GET", "people"), ("POST", "people"), ("POST", "people/bob/password-reset")):
        answer = api.request(method, f"hub/api/hubforge/{path}", json={"text": "eve"} if method == "POST" else None)
        assert answer.status_code == 409 and "at the identity provider" in answer.json()["message"], answer.text
    page = session.http.get(session.url("hub/hubforge/people"), timeout=30)
    assert page.status_code == 200 and "people come from the identity provider" in page.text


def test_the_name_of_the_hubs_native_admin_gives_no_admin_rights(live, ada):
    _, answer = sign_in(live.url, "admin", PASSWORD)
    assert answer.status_code == 200
    assert ada[1].user("admin")["admin"] is False


def test_a_member_removed_at_the_provider_is_refused_at_the_next_login_and_their_server_stops(live, idp, ada):
    session, answer = sign_in(live.url, "bob", PASSWORD)
    assert answer.status_code == 200
    api = HubAPI(live.url, session.new_token("bob"))
    api.wait_ready("bob")  # started by the sign-in
    idp.set_groups("bob", ["alumni"])
    _, again = sign_in(live.url, "bob", PASSWORD)
    assert again.status_code == 403 and "You signed in at the identity provider as bob" in again.text
    assert ada[1].user("bob")["servers"] == {}
    with pytest.raises(docker.errors.NotFound):
        live.lab("bob")


def test_a_signed_in_member_who_loses_access_is_signed_out_within_the_recheck_and_stopped(live, idp, ada):
    session, answer = sign_in(live.url, "cleo", PASSWORD)
    assert answer.status_code == 200
    api = HubAPI(live.url, session.new_token("cleo"))
    api.wait_ready("cleo")  # started by the sign-in
    assert session.http.get(session.url("hub/home"), allow_redirects=False, timeout=30).status_code == 200
    idp.set_groups("cleo", [])
    time.sleep(RECHECK_SECONDS + 1)  # the recheck interval must pass: that is what is tested
    home = session.http.get(session.url("hub/home"), allow_redirects=False, timeout=60)
    assert home.status_code == 302 and "login" in home.headers["Location"], (home.status_code, home.headers)
    assert ada[1].user("cleo")["servers"] == {}


def test_a_member_removed_at_the_provider_loses_their_server_at_the_next_recheck_without_coming_back(live, idp, ada):
    """Nobody asks the hub on their behalf (a terminal left open needs no request): the recheck itself stops them."""
    session, answer = sign_in(live.url, "finn", PASSWORD)
    assert landed(live, answer, "finn"), (answer.status_code, answer.url)
    HubAPI(live.url, session.new_token("finn")).wait_ready("finn")  # started by the sign-in
    idp.set_groups("finn", ["alumni"])
    wait_until(
        lambda: ada[1].user("finn")["servers"] == {},
        RECHECK_SECONDS * 3 + 30,
        "finn's server to stop at a recheck, without a request from finn",
    )
    with pytest.raises(docker.errors.NotFound):
        live.lab("finn")
    wait_until(lambda: signed_out(session), RECHECK_SECONDS * 2 + 10, "finn's session to be refused at a recheck")


def test_a_user_allowed_by_name_is_refused_and_stopped_once_the_name_leaves_the_setting(live, idp, ada):
    session, answer = sign_in(live.url, "dora", PASSWORD)
    assert landed(live, answer, "dora"), (answer.status_code, answer.url)  # by name: dora is in no allowed group
    HubAPI(live.url, session.new_token("dora")).wait_ready("dora")  # started by the sign-in
    restart_hub_with(live, OIDC_ALLOWED_USERS=None)  # the operator takes dora off the list
    wait_until(
        lambda: ada[1].user("dora")["servers"] == {},
        RECHECK_SECONDS * 3 + 30,
        "dora's server to stop at a recheck after the restart, without a request from dora",
    )
    with pytest.raises(docker.errors.NotFound):
        live.lab("dora")
    assert signed_out(session)  # the session from before the change is over
    _, again = sign_in(live.url, "dora", PASSWORD)
    assert again.status_code == 403 and "You signed in at the identity provider as dora" in again.text


def test_a_deleted_users_binding_at_the_provider_goes_with_them_and_another_account_may_take_the_name(live, idp, ada):
    admin = ada[1]
    assert admin.request("GET", "hub/api/users/dora").status_code == 200  # signed in above, bound to sub "dora"
    _, taken = sign_in(live.url, "dora-new", PASSWORD)  # the provider now calls another account dora
    assert taken.status_code == 403 and "belongs to another account" in taken.text
    if admin.user("dora")["servers"]:
        admin.stop("dora")
    deleted = admin.request("DELETE", "hub/api/users/dora")  # the admin page's "Delete user"
    assert deleted.status_code == 204, deleted.text
    session, answer = sign_in(live.url, "dora-new", PASSWORD)
    assert landed(live, answer, "dora"), (answer.status_code, answer.url, answer.text[:300])
    user = admin.user("dora")
    assert user["admin"] is False and TEAM in user["groups"]
    assert HubAPI(live.url, session.new_token("dora")).user("dora")["name"] == "dora"  # signed in as the new dora


def test_logout_ends_the_hub_session_and_the_providers(live, idp):
    session, answer = sign_in(live.url, "ada", PASSWORD)
    assert answer.status_code == 200
    out = session.http.get(session.url("hub/logout"), allow_redirects=False, timeout=30)
    assert out.status_code == 302 and out.headers["Location"].startswith(f"{idp.issuer}/session/end?")
    confirm = session.http.get(out.headers["Location"], timeout=30)  # the provider asks: sign out?
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', confirm.text))
    action = re.search(r'<form[^>]*action="([^"]+)"', confirm.text).group(1)
    done = session.http.post(
        action if action.startswith("http") else idp.issuer + action, data={**form, "logout": "yes"}, timeout=30
    )
    assert done.url.startswith(live.url)  # back at the hub, as the post-logout redirect URI says
    assert session.http.get(session.url("hub/home"), allow_redirects=False, timeout=30).status_code == 302
    again = session.http.get(session.url("hub/oauth_login"), timeout=30)
    assert 'name="password"' in again.text  # the provider asks for the password again: its session ended too


def test_the_client_secret_is_never_shown(live, idp):
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "status", "--json", "--project", live.project],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "INVOKE_HUBFORGE_STACK_DIR": str(live.stack.options.run_dir.parent)},
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["oidc"]["issuer"] == idp.issuer and state["oidc"]["redirect_uri"].endswith("/hub/oauth_callback")
    logs = live.hub().logs().decode()
    assert idp.secret not in result.stdout + result.stderr and idp.secret not in logs
    assert "/run/secrets/oidc_client_secret" in json.dumps(live.hub().attrs["Mounts"])  # from the file, as a secret


def test_claims_from_the_id_token_start_a_hub_that_sends_browsers_to_the_provider(live, idp):
    """OIDC_CLAIMS_FROM=id_token (Entra's way): the hub image with the stack's config, on the stack's network, against
    the provider there; it starts, and its login sends the browser to the issuer."""
    images, _ = current_images()
    client = docker.from_env()
    env = {
        **idp.env(OIDC_ALLOW_ALL="1", OIDC_CLAIMS_FROM="id_token"),
        "OIDC_CLIENT_SECRET_FILE": "",
        "OIDC_CLIENT_SECRET": idp.secret,
        "LAB_SUBDOMAINS": "0",
    }
    # A network of its own with the provider on it: there this hub's proxy reaches this hub as "hub" (its
    # hub_connect_url), not the stack's hub, which has that name on the stack's network.
    network = client.networks.create(f"{live.project}_idtoken", labels={"hubforge.test": "integration"})
    (provider,) = client.containers.list(
        filters={"label": [f"com.docker.compose.project={live.project}", "com.docker.compose.service=idp"]}
    )
    network.connect(provider, aliases=["idp"])
    container = client.containers.create(
        images["hub"],
        environment=env,
        labels={"hubforge.test": "integration"},
        network=network.name,
        networking_config={network.name: client.api.create_endpoint_config(aliases=["hub"])},
        volumes={
            str(ROOT / "stack" / "jupyterhub_config.py"): {"bind": "/srv/jupyterhub/jupyterhub_config.py", "mode": "ro"}
        },
        tmpfs={"/srv/jupyterhub/data": "uid=1000", "/srv/jupyterhub/certs": "uid=1000"},
    )
    try:
        container.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            container.reload()
            logs = container.logs().decode()
            if "JupyterHub is now running" in logs or container.status != "running":
                break
            time.sleep(1)
        assert "JupyterHub is now running" in logs and container.status == "running", logs[-3000:]
        code, out = container.exec_run(
            [
                "python3",
                "-c",
                "import http.client, ssl; c = http.client.HTTPSConnection("
                "'127.0.0.1', 8443, context=ssl._create_unverified_context()); "
                "c.request('GET', '/hub/oauth_login'); r = c.getresponse(); print(r.status, r.getheader('Location'))",
            ]
        )
        assert out.decode().startswith(f"302 {idp.issuer}/auth?"), out.decode()[-2000:]
        assert "Traceback" not in logs
    finally:
        container.remove(force=True)
        network.disconnect(provider)
        network.remove()


def test_an_issuer_that_does_not_answer_stops_the_hub_with_one_line(tmp_path):
    images, _ = current_images()
    client = docker.from_env()
    container = client.containers.create(
        images["hub"],
        labels={"hubforge.test": "integration"},
        environment={
            "AUTHENTICATOR": "oidc",
            "OIDC_ISSUER": "http://localhost:9",
            "OIDC_CLIENT_ID": "hub",
            "OIDC_CLIENT_SECRET": "not-shown",
            "OIDC_ALLOW_ALL": "1",
            "OIDC_START_WAIT": "2",
        },
        volumes={
            str(ROOT / "stack" / "jupyterhub_config.py"): {"bind": "/srv/jupyterhub/jupyterhub_config.py", "mode": "ro"}
        },
    )
    try:
        container.start()
        code = container.wait(timeout=90)["StatusCode"]
        errors = [
            line
            for line in container.logs().decode().splitlines()
            if line.startswith("hubforge: configuration error") or "Traceback" in line
        ]
    finally:
        container.remove(force=True)
    assert code != 0
    assert len(errors) == 1 and errors[0].startswith(
        "hubforge: configuration error: OIDC_ISSUER: the issuer does not answer at http://localhost:9/.well-known/openid-configuration"
    ), errors
