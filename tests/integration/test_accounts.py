"""Accounts that stay revoked, and a login that an attacker cannot turn against the admin.

Each test plays the attack or the mistake on a live stack and shows it failing: a revoked user's token,
cookie and server; a hub restart; a name signed up again after a discard; an attacker in a lab spraying
the admin's login; guessing a pending account's password; bootstrap with signup off.
"""

from __future__ import annotations

import json
import re
import time

import docker
import pytest

from ..support.helpers import wait_until
from ..support.hubclient import HubAPI, HubSession, plain_get
from ..support.livestack import ADMIN, PASSWORD, approved_user, claim_admin, start_stack, stop_stack

pytestmark = pytest.mark.integration
# The host's requests all reach the hub from one address (Docker's port forwarding), so its budget is
# raised above what this module spends; the lab attacker below has its own address and the same budget.
STACK_ENV = {"LOGIN_MAX_FAILURES": "5", "LOGIN_LOCKOUT_SECONDS": "600", "LOGIN_ADDRESS_LIMIT": "40"}


def act(admin: HubSession, name: str, action: str, **fields: str):
    token = admin.xsrf("hub/authorize")
    return admin.http.post(
        admin.url(f"hub/authorize/{name}/{action}"), data={"_xsrf": token, **fields}, allow_redirects=False, timeout=120
    )


def approval_shown(admin: HubSession, name: str) -> str | None:
    """'Yes' or 'No' in the authorize page's row for `name`; None when the page lists no such account."""
    page = admin.http.get(admin.url("hub/authorize"), timeout=30)
    page.raise_for_status()
    match = re.search(rf"<td>{re.escape(name)}</td>\s*<td>(Yes|No)</td>", page.text)
    return match.group(1) if match else None


def user_volumes(live, name: str) -> set[str]:
    from hub_ext.naming import user_names

    wanted = set(user_names(live.stack.options.volume_prefix, name).volumes.values())
    return {v.name for v in docker.from_env().volumes.list() if v.name in wanted}


def wait_healthy(live, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if plain_get(live.url + "hub/health").status_code == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"the hub was not healthy {timeout}s after its restart")


def test_unapprove_revokes_tokens_sessions_and_the_server(live, admin, admin_api):
    session, api = approved_user(live, admin, "kim")
    api.start("kim")
    assert api.request("GET", "hub/api/user").status_code == 200
    assert session.http.get(session.url("hub/home"), allow_redirects=False, timeout=30).status_code == 200

    assert act(admin, "kim", "unapprove").status_code == 302

    assert api.request("GET", "hub/api/user").status_code in (401, 403)  # the token made before is dead
    assert admin_api.request("GET", "hub/api/users/kim/tokens").json()["api_tokens"] == []
    home = session.http.get(session.url("hub/home"), allow_redirects=False, timeout=30)
    assert home.status_code == 302 and "/hub/login" in home.headers["Location"]  # the cookie session is over
    assert admin_api.user("kim")["servers"] == {}
    assert "not been authorized" in HubSession(live.url).login("kim", PASSWORD).text


# A server config in the user's own home that never returns: the lab's start then stays pending for as long as the
# user likes (any user can write it, from a terminal or a notebook).
STALL = "import time\ntime.sleep(3600)\n"
WRITE_CONFIG = (
    "import pathlib, sys; folder = pathlib.Path.home() / '.jupyter'; folder.mkdir(exist_ok=True); "
    "(folder / 'jupyter_server_config.py').write_text(sys.argv[1])"
)


def lab_containers(live, name: str) -> list:
    return docker.from_env().containers.list(
        filters={"label": [f"hubforge.project={live.project}", f"hubforge.user={name}"]}
    )


def hold_next_start(live, api: HubAPI, name: str) -> None:
    """The user's next start is held pending on purpose: its container runs, its server never answers."""
    api.start(name)
    wrote = live.lab(name).exec_run(["python3", "-c", WRITE_CONFIG, STALL], user="lab")
    assert wrote.exit_code == 0, wrote.output.decode()
    api.stop(name)
    assert api.request("POST", f"hub/api/users/{name}/server").status_code == 202
    wait_until(
        lambda: lab_containers(live, name) and (api.user(name)["servers"].get("") or {}).get("pending") == "spawn",
        90,
        f"{name}'s start to be under way and held",
    )


def test_unapproving_during_a_held_start_ends_everything(live, admin, admin_api):
    """Revocation while a start is pending: credentials die at once, and the start is cancelled (it used to answer
    500, leaving the user's token, OAuth tokens and cookie alive)."""
    session, api = approved_user(live, admin, "oli")
    hold_next_start(live, api, "oli")

    answer = act(admin, "oli", "unapprove")
    assert answer.status_code == 302, f"unapprove answered {answer.status_code}: {answer.text[-300:]}"

    assert api.request("GET", "hub/api/user").status_code in (401, 403)  # the token is refused at once
    home = session.http.get(session.url("hub/home"), allow_redirects=False, timeout=30)
    assert home.status_code == 302 and "/hub/login" in home.headers["Location"]  # the cookie no longer works
    wait_until(
        lambda: not lab_containers(live, "oli") and admin_api.user("oli")["servers"] == {},
        60,
        "oli's held lab to be gone",
    )


def test_a_held_start_does_not_keep_everyone_elses_labs_from_starting(live, admin, admin_api):
    """The hub starts a few labs at a time (one on 2 cores). A start held on purpose kept its slot until the start
    timeout (600 s), and every other user's start waited behind it: one user could keep the whole team out."""
    _, holder = approved_user(live, admin, "hal")
    _, other = approved_user(live, admin, "ivy")
    hold_next_start(live, holder, "hal")
    other.start("ivy")  # waits for a slot, then for the lab to answer (HubAPI.start's own limit)
    assert (admin_api.user("hal")["servers"].get("") or {}).get("pending") == "spawn"  # still held meanwhile
    admin_api.stop("ivy")
    assert act(admin, "hal", "unapprove").status_code == 302  # a pending start cannot be stopped; revoking ends it
    wait_until(lambda: not lab_containers(live, "hal"), 60, "hal's held lab to be gone")


def test_discarding_during_a_held_start_completes_and_can_be_retried(live, admin, admin_api):
    _, api = approved_user(live, admin, "pam")
    hold_next_start(live, api, "pam")
    assert act(admin, "pam", "unapprove").status_code == 302
    assert act(admin, "pam", "discard", confirm="pam").status_code == 302
    assert admin_api.request("GET", "hub/api/users/pam").status_code == 404
    assert user_volumes(live, "pam") == set() and not lab_containers(live, "pam")
    again = act(admin, "pam", "discard", confirm="pam")  # a retry (a double click, a timed-out first try)
    assert again.status_code == 302 and "nothing left to discard" in again.headers["Location"]


@pytest.mark.parametrize("route", ["rest-api", "admin-page"])
def test_a_deleted_users_files_never_reach_the_next_owner_of_the_name(live, admin, admin_api, route):
    """JupyterHub's own "Delete user" (the admin page's button calls DELETE /hub/api/users/NAME with the admin's
    cookie session; a script calls it with a token) takes the user's volumes too."""
    name = {"rest-api": "quin", "admin-page": "rhea"}[route]
    _, api = approved_user(live, admin, name)
    api.start(name)
    assert (
        live.lab(name).exec_run(["sh", "-c", "echo private > /home/lab/workspace/diary.txt"], user="lab").exit_code == 0
    )
    api.stop(name)
    if route == "rest-api":
        deleted = admin_api.request("DELETE", f"hub/api/users/{name}")
    else:
        admin.http.get(admin.url("hub/admin"), timeout=30)  # the page sets the _xsrf cookie its script sends back
        deleted = admin.api("DELETE", f"users/{name}")
    assert deleted.status_code == 204, deleted.text
    assert user_volumes(live, name) == set()

    _, newcomer = approved_user(live, admin, name)  # a new person signs up under the same name
    newcomer.start(name)
    listing = live.lab(name).exec_run(["ls", "-A", "/home/lab/workspace"], user="lab")
    assert listing.exit_code == 0 and b"diary.txt" not in listing.output


def test_a_hub_restart_approves_nobody(live, admin):
    pending_session = HubSession(live.url)
    pending_session.signup("lee", PASSWORD)
    _, api = approved_user(live, admin, "max")
    api.start("max")
    assert act(admin, "max", "unapprove").status_code == 302
    assert act(admin, "max", "discard", confirm="max").status_code == 302

    live.hub().restart(timeout=30)
    wait_healthy(live)

    assert approval_shown(admin, "lee") == "No"
    assert approval_shown(admin, "max") is None  # discarded stays discarded: no account came back
    assert HubSession(live.url).login("max", PASSWORD).status_code != 302
    assert HubSession(live.url).login("lee", PASSWORD).status_code != 302


def test_discard_asks_for_the_name_then_leaves_nothing_for_the_next_owner(live, admin, admin_api):
    _, api = approved_user(live, admin, "nia")
    assert admin_api.request("POST", "hub/api/groups/docker-sock/users", json={"users": ["nia"]}).status_code == 200
    api.start("nia")
    lab = live.lab("nia")
    assert lab.exec_run(["sh", "-c", "echo secret > /home/lab/workspace/old.txt"], user="lab").exit_code == 0
    api.stop("nia")
    assert user_volumes(live, "nia")
    assert act(admin, "nia", "unapprove").status_code == 302

    assert act(admin, "nia", "discard").status_code == 400  # no confirmation: nothing happens
    assert act(admin, "nia", "discard", confirm="someone-else").status_code == 400
    assert approval_shown(admin, "nia") == "No" and user_volumes(live, "nia")

    assert act(admin, "nia", "discard", confirm="nia").status_code == 302
    assert admin_api.request("GET", "hub/api/users/nia").status_code == 404
    assert user_volumes(live, "nia") == set()
    groups = admin_api.request("GET", "hub/api/groups/docker-sock").json()
    assert "nia" not in groups["users"]

    _, newcomer = approved_user(live, admin, "nia")  # someone else takes the name
    assert admin_api.user("nia")["groups"] == []
    newcomer.start("nia")
    listing = live.lab("nia").exec_run(["ls", "-A", "/home/lab/workspace"], user="lab")
    assert listing.exit_code == 0 and b"old.txt" not in listing.output


ATTACK = r"""
import json, re, ssl, sys, urllib.error, urllib.parse, urllib.request
hub = "https://hub:8443/hub/"  # through the hub's TLS proxy, as a browser would
tls = ssl._create_unverified_context()
cookies = {}

def call(request):
    try:
        answer = urllib.request.urlopen(request, timeout=30, context=tls)
    except urllib.error.HTTPError as exc:
        answer = exc
    for header in answer.headers.get_all("Set-Cookie") or []:
        name, value = header.split(";", 1)[0].split("=", 1)
        cookies[name] = value
    return answer.status if hasattr(answer, "status") else answer.code, answer.read().decode()

# the headers claim another address (the admin's, say), consistently: the hub must not believe them
spoofed = {"X-Forwarded-For": sys.argv[2], "X-Real-Ip": sys.argv[2]}
_, page = call(urllib.request.Request(hub + "login", headers=spoofed))
xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
results = []
for username, password in json.loads(sys.argv[1]):
    body = urllib.parse.urlencode({"_xsrf": xsrf, "username": username, "password": password}).encode()
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()), **spoofed}
    status, text = call(urllib.request.Request(hub + "login", data=body, headers=headers))
    alert = re.search(r'class="login_error"[^>]*>\s*(.*?)\s*</', text, re.S)
    results.append([status, alert.group(1) if alert else re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))[-300:]])
print(json.dumps(results))
"""


def attack_from_lab(
    live, lab_user: str, attempts: list[tuple[str, str]], claimed_address: str
) -> list[tuple[int, str]]:
    result = live.lab(lab_user).exec_run(["python3", "-c", ATTACK, json.dumps(attempts), claimed_address], user="lab")
    assert result.exit_code == 0, result.output.decode()[-2000:]
    return [tuple(r) for r in json.loads(result.output.decode().strip().splitlines()[-1])]


def host_address(live) -> str:
    """Where the host's requests come from, as the hub sees them: the stack network's gateway."""
    return live.hub_network_holder().attrs["NetworkSettings"]["Networks"][f"{live.project}_net"]["Gateway"]


def test_an_attacker_in_a_lab_cannot_lock_the_admin_out(live, admin):
    _, api = approved_user(live, admin, "eve")
    api.start("eve")
    answers = attack_from_lab(live, "eve", [(ADMIN, f"wrong-guess-{i}") for i in range(20)], host_address(live))

    statuses = [status for status, _ in answers]
    assert statuses[:5] == [200] * 5, answers[:2]  # the free failures, answered "invalid"
    assert "Invalid username or password" in answers[0][1]
    assert statuses.count(429) >= 14  # then slowed down: most tries are refused unchecked
    assert "try again in" in answers[-1][1]

    # the admin, from the host, logs in at once with the right password
    assert HubSession(live.url).login(ADMIN, PASSWORD).status_code == 302


def test_one_address_cannot_spray_many_accounts(live, admin):
    """A per-address budget: failed logins for ever new names run out of it, whatever the names."""
    _, api = approved_user(live, admin, "ray")
    api.start("ray")
    answers = attack_from_lab(live, "ray", [(f"victim{i}", "wrong-guess-0") for i in range(45)], "10.0.0.9")
    statuses = [status for status, _ in answers]
    assert statuses[:40] == [200] * 40 and statuses[40:] == [429] * 5
    assert "try again in" in answers[-1][1]
    assert HubSession(live.url).login("ray", PASSWORD).status_code == 302  # other addresses are unaffected


def test_a_pending_accounts_password_cannot_be_confirmed_beyond_the_limit(live):
    session = HubSession(live.url)
    session.signup("pia", PASSWORD)
    for i in range(5):
        assert session.login("pia", f"wrong-guess-{i}").status_code == 200
    right = session.login("pia", PASSWORD)
    assert right.status_code == 429  # refused unchecked: the guesser learns nothing
    assert "not been authorized" not in right.text and "try again in" in right.text
    assert int(right.headers["Retry-After"]) >= 1


def test_an_expired_login_form_says_so(live):
    session = HubSession(live.url)
    session.xsrf("hub/login")
    answer = session.http.post(
        session.url("hub/login"),
        data={"_xsrf": "stale", "username": "x", "password": "y"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 403 and "Login form invalid or expired" in answer.text


def test_bootstrap_with_signup_off(tmp_path_factory):
    """ENABLE_SIGNUP=0 and no admin password: the admin still claims the hub with the bootstrap secret."""
    closed = start_stack(tmp_path_factory.mktemp("closed"), {"ENABLE_SIGNUP": "0"})
    try:
        secret = closed.bootstrap_secret()
        assert secret
        assert "Signup is closed" in HubSession(closed.url).signup("someone", PASSWORD).text  # only the admin may
        session = claim_admin(closed)
        assert closed.bootstrap_secret() is None
        assert plain_get(closed.url + "hub/signup").status_code == 404  # claimed: the page is gone
        assert session.http.get(session.url("hub/authorize"), timeout=30).status_code == 200
        assert HubAPI(closed.url, session.new_token(ADMIN)).user(ADMIN)["admin"] is True
    finally:
        stop_stack(closed)
