"""Each lab on its own origin (issue 12, part 1): every name signup accepts works as a subdomain, and the
hub's cookies never reach a lab. The harness reaches the stack at hub.localhost (tests/support/localdns.py)."""

from __future__ import annotations

import http.cookiejar
import urllib.request

import pytest

from ..support.hubclient import HubAPI, HubSession, plain_get
from ..support.livestack import PASSWORD, approved_user

pytestmark = pytest.mark.integration

NAMES = ["first.last", "zoë", "n" * 64]  # a dot, unicode, the longest name signup accepts


@pytest.mark.parametrize("name", NAMES)
def test_every_kind_of_name_gets_a_working_subdomain(live, admin, name):
    _, api = approved_user(live, admin, name)
    api.start(name)  # waits until the lab answers on its own origin
    url = api.url(f"user/{name}/api/status")
    host = url.split("/")[2]
    assert host.endswith(".hub.localhost:" + live.url.rsplit(":", 1)[1].rstrip("/")) and host != live.url.split("/")[2]
    assert len(host.split(".")[0]) <= 63  # one DNS label
    assert api.request("GET", f"user/{name}/api/status").status_code == 200
    api.stop(name)


def test_the_hubs_cookies_never_reach_a_lab(live, admin):
    owner, api = approved_user(live, admin, "cora")
    api.start("cora")
    session = HubSession(live.url)
    login = session.login("cora", PASSWORD)
    assert login.status_code == 302
    cookies = login.raw.headers.getlist("Set-Cookie")
    (login_cookie,) = [c for c in cookies if c.startswith("__Host-jupyterhub-hub-login=")]
    assert "domain=" not in login_cookie.lower()  # the credential is host-only: the hub's name, never a lab's
    assert "path=/;" in login_cookie.lower() + ";"  # and __Host-: no lab can plant one with a Domain (cookie tossing)
    lab = session.http.get(session.url("user/cora/lab"), timeout=60)  # the hub sends the browser to the lab's origin
    assert lab.status_code == 200 and lab.url.startswith("https://cora.hub.localhost:"), lab.url
    login_jar = [c for c in session.http.cookies if c.name == "__Host-jupyterhub-hub-login"]
    assert login_jar and all(c.domain == "hub.localhost" and not c.domain_specified for c in login_jar)
    # What a browser sends to the lab's origin with these cookies: a cookie set without Domain goes back to its own
    # host only (Python's cookie jar, which requests uses, would also send it to subdomains unless told to be strict)
    strict = http.cookiejar.DefaultCookiePolicy(
        strict_ns_domain=http.cookiejar.DefaultCookiePolicy.DomainStrictNonDomain
    )
    browser = http.cookiejar.CookieJar(strict)
    for cookie in session.http.cookies:
        browser.set_cookie(cookie)
    to_lab = urllib.request.Request(lab.url.split("/user/")[0] + "/user/cora/api/me")
    browser.add_cookie_header(to_lab)
    sent = to_lab.get_header("Cookie", "")
    assert "jupyterhub-hub-login" not in sent and "jupyterhub-user-cora" in sent, sent
    # JupyterHub's jupyterhub-session-id does go to *.hub.localhost: it is no credential (HttpOnly; logout uses it
    # to end the session's tokens everywhere), so a lab that sees it can do nothing with it


def test_the_hub_still_answers_on_its_address(live):
    """Scripts and health checks that use the address, not the name, still reach the hub."""
    port = live.url.rsplit(":", 1)[1]
    assert plain_get(f"https://127.0.0.1:{port}hub/health").status_code == 200


def test_status_says_where_labs_live(live):
    assert live.stack.status()["lab_origin"].startswith("https://<user>.hub.localhost:")


def test_a_browser_at_the_hubs_address_is_sent_to_its_name(live, admin_api):
    """At https://127.0.0.1/ a browser would sign in and then lose the cookies, which name the public host: its page
    requests go to the public host instead, while token calls (scripts) keep working at the address."""
    port = live.url.rsplit(":", 1)[1].rstrip("/")
    for path in ("hub/login", "hub/home?x=1", "user/nobody/lab"):
        page = plain_get(f"https://127.0.0.1:{port}/{path}", allow_redirects=False)
        assert page.status_code == 302, (path, page.status_code)
        assert page.headers["Location"] == f"https://hub.localhost:{port}/{path}"
    by_address = HubAPI(f"https://127.0.0.1:{port}/", admin_api.http.headers["Authorization"].split(" ", 1)[1])
    answer = by_address.request("GET", "hub/api/user")
    assert answer.status_code == 200 and answer.json()["name"] == "admin"
