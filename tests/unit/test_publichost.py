"""Which requests hub_ext.hub.publichost sends to the public host: a browser's pages under another name, nothing
else."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_ext.hub.publichost import redirect_target

ORIGIN = "https://hub.example.org:8443"


@pytest.mark.parametrize(
    ("method", "host", "uri", "token", "expected"),
    [
        ("GET", "127.0.0.1", "/hub/login?next=%2Fhub%2Fhome", False, ORIGIN + "/hub/login?next=%2Fhub%2Fhome"),
        ("HEAD", "10.0.0.5", "/hub/home", False, ORIGIN + "/hub/home"),
        ("GET", "other.example.net", "/user/ada/lab", False, ORIGIN + "/user/ada/lab"),
        ("GET", "hub.example.org", "/hub/login", False, None),  # the public host
        ("GET", "ada.hub.example.org", "/user/ada/lab", False, None),  # a lab's subdomain, when its server is down
        (
            "GET",
            "HUB.EXAMPLE.ORG.",
            "/hub/home",
            False,
            None,
        ),  # names are case-insensitive, a final dot is the same name
        ("GET", "hub", "/hub/home", False, None),  # the hub's alias inside the stack
        ("GET", "127.0.0.1", "/hub/api/users", True, None),  # a token call: scripts at any address
        ("GET", "127.0.0.1", "/hub/api/user", False, None),  # the API answers 403 by itself, never a redirect
        # a lab's own check of the hub's version, with no token, at the hub's address inside the stack (Swarm: an IP)
        ("GET", "10.230.7.2", "/hub/api", False, None),
        ("GET", "10.230.7.2", "/hub/api?x=1", False, None),
        ("GET", "127.0.0.1", "/hub/apis-are-not-the-api", False, ORIGIN + "/hub/apis-are-not-the-api"),
        ("GET", "127.0.0.1", "/hub/health", False, None),  # health checks use the address
        ("GET", "127.0.0.1", "/hub/metrics", False, None),
        ("POST", "127.0.0.1", "/hub/login", False, None),  # a form post is never redirected (its body would be lost)
        ("GET", "evilhub.example.org", "/hub/home", False, ORIGIN + "/hub/home"),  # not a subdomain, only a suffix
    ],
)
def test_what_is_redirected(method, host, uri, token, expected):
    assert redirect_target(method, host, uri, token, ORIGIN, "/") == expected


def test_a_base_url_is_kept_and_its_api_exempt():
    assert redirect_target("GET", "127.0.0.1", "/jh/hub/home", False, ORIGIN, "/jh/") == ORIGIN + "/jh/hub/home"
    assert redirect_target("GET", "127.0.0.1", "/jh/hub/api/info", False, ORIGIN, "/jh/") is None


def test_doctor_names_the_fix_when_scripts_cannot_resolve_the_hubs_name(monkeypatch):
    """Python's resolver on a bare Debian machine does not know *.localhost (browsers and curl do by themselves)."""
    import socket

    from hubforge import doctor

    def unresolvable(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    (check,) = doctor.checks(Path("/nonexistent"), {"resolver"})
    assert not check.ok and "hub.localhost does not resolve here" in check.detail
    assert "libnss-myhostname" in check.fix and check.apt == ("libnss-myhostname",)


def test_status_gives_scripts_an_address():
    from hubforge.deploy.engine import script_address

    assert [script_address(b) for b in ("0.0.0.0", "::", "127.0.0.1", "192.0.2.7", "2001:db8::1")] == [
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.1",
        "192.0.2.7",
        "[2001:db8::1]",
    ]
