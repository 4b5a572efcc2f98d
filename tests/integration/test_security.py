"""NativeAuthenticator's gaps, closed: each test shows the attack or mistake failing on a live stack."""

from __future__ import annotations

import re

import pytest
import requests
from requests.adapters import HTTPAdapter

from ..hubclient import HubSession
from ..livestack import ADMIN, PASSWORD

pytestmark = pytest.mark.integration
STACK_ENV = {"LOGIN_MAX_FAILURES": "5", "LOGIN_LOCKOUT_SECONDS": "600", "LOGIN_ADDRESS_LIMIT": "100"}


def alert(response: requests.Response) -> str:
    match = re.search(r'role="alert">\s*(.*?)\s*</div>', response.text, re.S)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def admin(live) -> HubSession:
    """Overrides the shared fixture: this module checks the bootstrap itself."""
    session = HubSession(live.url)
    refused = session.signup(ADMIN, PASSWORD, bootstrap_secret="guess")
    assert "bootstrap secret" in alert(refused)
    assert session.login(ADMIN, PASSWORD).status_code != 302
    accepted = session.signup(ADMIN, PASSWORD, bootstrap_secret=live.bootstrap_secret())
    assert "successful" in alert(accepted)
    assert live.bootstrap_secret() is None  # used once, then gone
    assert session.login(ADMIN, PASSWORD).status_code == 302
    return session


def pending(live, name: str) -> HubSession:
    session = HubSession(live.url)
    assert "sent to the admin" in alert(session.signup(name, PASSWORD))
    return session


def test_get_on_the_approval_path_changes_nothing(live, admin):
    user = pending(live, "gus")
    admin.http.get(admin.url("hub/authorize/gus"), timeout=30)
    admin.http.get(admin.url("hub/authorize/gus/approve"), timeout=30)
    assert user.login("gus", PASSWORD).status_code != 302


def test_approval_post_needs_xsrf_and_is_idempotent(live, admin):
    user = pending(live, "hal")
    assert admin.http.post(admin.url("hub/authorize/hal/approve"), timeout=30).status_code == 403
    assert user.login("hal", PASSWORD).status_code != 302
    admin.approve("hal")
    admin.approve("hal")  # twice: still approved, not toggled back
    assert user.login("hal", PASSWORD).status_code == 302


def test_unapprove_and_discard(live, admin):
    user = pending(live, "ida")
    admin.approve("ida")
    token = admin.xsrf("hub/authorize")
    admin.http.post(admin.url("hub/authorize/IDA/unapprove"), data={"_xsrf": token}, timeout=30)  # mixed case
    assert HubSession(live.url).login("ida", PASSWORD).status_code != 302
    admin.http.post(admin.url("hub/authorize/ida/discard"), data={"_xsrf": token, "confirm": "ida"}, timeout=30)
    assert "sent to the admin" in alert(user.signup("ida", PASSWORD))  # the name is free again


@pytest.mark.parametrize(("name", "status"), [("nobody", 404), ("a%20b", 400), ("a,b", 400)])
def test_unknown_and_malformed_names(admin, name, status):
    token = admin.xsrf("hub/authorize")
    assert admin.http.post(admin.url(f"hub/authorize/{name}/approve"), data={"_xsrf": token}, timeout=30).status_code == status


@pytest.mark.parametrize(
    ("password", "rule"),
    [("", "The password is empty"), ("short", "at least 8 characters"), ("password", "common passwords")],
)
def test_weak_passwords_are_refused_naming_the_rule(live, password, rule):
    assert rule in alert(HubSession(live.url).signup("weakling", password))


@pytest.mark.parametrize(("name", "rule"), [("a b", "contains a space"), ("a/b", "contains a slash"), ("a,b", "contains a comma")])
def test_refused_usernames_name_the_rule(live, name, rule):
    assert rule in alert(HubSession(live.url).signup(name, PASSWORD))


def test_after_five_failures_the_same_address_waits_even_with_the_right_password(live, admin):
    pending(live, "jon")
    admin.approve("jon")
    session = HubSession(live.url)
    for _ in range(5):
        assert session.login("jon", "wrong-password-1").status_code != 302
    assert session.login("jon", PASSWORD).status_code != 302


class SourceAddress(HTTPAdapter):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        return super().init_poolmanager(*args, **kwargs)


@pytest.mark.parametrize("client", ["127.0.0.1", "127.0.0.2"])
def test_login_through_the_tls_front_from_two_addresses(live, admin, client):
    session = HubSession(live.url)
    session.http.mount("https://", SourceAddress(client))
    assert session.login(ADMIN, PASSWORD).status_code == 302


def test_cookies_and_security_headers(live, admin):
    session = HubSession(live.url)
    login = session.login(ADMIN, PASSWORD)
    cookies = login.raw.headers.getlist("Set-Cookie")
    assert cookies and all("Secure" in c for c in cookies)
    assert any(c.startswith("jupyterhub-session-id") and "HttpOnly" in c for c in cookies)
    page = session.http.get(session.url("hub/home"), timeout=30)
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'self'" in page.headers["Content-Security-Policy"]


def test_no_page_may_frame_a_lab(live, admin):
    from ..livestack import approved_user

    _, api = approved_user(live, admin, "fay")
    api.start("fay")
    for path in ("user/fay/lab", "user/fay/api/status"):
        answer = api.request("GET", path)
        assert answer.status_code == 200
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], path


def test_an_admin_does_not_open_a_users_lab_but_still_manages_it(live, admin):
    """The admin's browser never gets a lab's token: the lab's code cannot borrow the admin's rights."""
    from ..livestack import approved_user

    owner, api = approved_user(live, admin, "gus")
    api.start("gus")
    opened = admin.http.get(admin.url("user/gus/lab"), timeout=30)  # follows the lab's OAuth redirects
    assert "/hub/api/oauth2/authorize" in opened.url
    assert opened.status_code == 403, f"the admin could open gus's lab ({opened.status_code} at {opened.url})"
    assert "Admins do not open other users&#39; servers" in opened.text or "Admins do not open other users' servers" in opened.text
    mine = owner.http.get(owner.url("user/gus/lab"), timeout=30)  # the owner opens it as ever
    assert mine.status_code == 200 and mine.url.split("?")[0].endswith("/user/gus/lab"), mine.url
    # the admin keeps server management: stop through the admin's own API session
    stopped = admin.api("DELETE", "users/gus/server")
    assert stopped.status_code in (202, 204), stopped.text


def test_the_http_port_only_redirects(live):
    plain = requests.Session()
    plain.trust_env = False
    for path in ("hub/login", "hub/api/users", "user/anyone/lab"):
        response = plain.get(live.http_url + path, allow_redirects=False, timeout=30)
        assert response.status_code == 301 and response.headers["location"].startswith("https://")
