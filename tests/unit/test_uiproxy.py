"""Prometheus' pages behind the hub's login (hub_ext.monitoring.uiproxy): the real proxy and JupyterHub's real
HubOAuth, between a stand-in hub API that knows two tokens and a stand-in Prometheus that echoes what it got."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from jupyterhub.services.auth import HubOAuth

from hub_ext.monitoring.uiproxy import ACCESS_SCOPE, make_app

PREFIX = "/services/prometheus/"
USERS = {  # token -> the model the hub's /hub/api/user gives for it (the scopes the token holds)
    "admin-token": {"kind": "user", "name": "admin", "admin": True, "scopes": [ACCESS_SCOPE, "read:users"]},
    "user-token": {"kind": "user", "name": "alice", "admin": False, "scopes": ["access:servers!user=alice"]},
    # admin in name, but a token made without the access scope: the scope decides, not the flag
    "narrow-admin-token": {"kind": "user", "name": "admin", "admin": True, "scopes": ["read:users"]},
}


class StandInHub(BaseHTTPRequestHandler):
    """JupyterHub's /hub/api/user: the model of the token in the Authorization header, or 403."""

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        token = self.headers.get("Authorization", "").removeprefix("token ").removeprefix("Bearer ")
        model = USERS.get(token)
        body = json.dumps(model or {"status": 403}).encode()
        self.send_response(200 if model else 403)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class StandInPrometheus(BaseHTTPRequestHandler):
    """Answers every path with what it was asked: method, path, and whether cookies or tokens reached it."""

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "cookie": self.headers.get("Cookie"),
                "authorization": self.headers.get("Authorization"),
                "body": self.rfile.read(length).decode(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Prometheus", "yes")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer  # noqa: N815

    def log_message(self, *args) -> None:
        pass


def serve(handler) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    hubs, prometheuses = serve(StandInHub), serve(StandInPrometheus)
    hub, prometheus = next(hubs), next(prometheuses)
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    address: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        auth = HubOAuth(
            api_url=f"{hub}/hub/api",
            api_token="service-token",
            base_url=PREFIX,
            hub_prefix="/hub/",
            oauth_client_id="service-prometheus",
            oauth_redirect_uri=f"{PREFIX}oauth_callback",
            cache_max_age=0,
        )
        server = make_app(auth, prometheus).listen(0, "127.0.0.1")
        address.append(next(iter(server._sockets.values())).getsockname()[1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{address[0]}{PREFIX}"
    loop.call_soon_threadsafe(loop.stop)
    for server in (hubs, prometheuses):
        next(server, None)


def get(url: str, token: str | None = None, **kwargs) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(url, headers=headers, allow_redirects=False, timeout=10, **kwargs)


def test_an_admin_reaches_prometheus_under_the_same_path(proxy):
    answer = get(proxy + "graph?g0.expr=up", "admin-token", cookies={"jupyterhub-session-id": "s"})
    assert answer.status_code == 200 and answer.headers["X-Prometheus"] == "yes"
    seen = answer.json()
    assert seen["method"] == "GET" and seen["path"] == f"{PREFIX}graph?g0.expr=up"
    assert seen["cookie"] is None and seen["authorization"] is None  # the hub's cookies and tokens stay here


def test_a_user_without_the_access_scope_gets_403(proxy):
    assert get(proxy + "graph", "user-token").status_code == 403
    assert get(proxy + "api/v1/query?query=up", "narrow-admin-token").status_code == 403


def test_an_unknown_visitor_is_sent_to_the_hubs_login(proxy):
    answer = get(proxy + "graph")
    assert answer.status_code == 302, answer.text
    assert "/hub/api/oauth2/authorize?" in answer.headers["Location"]
    assert "client_id=service-prometheus" in answer.headers["Location"]
    assert get(proxy + "graph", "forged-token").status_code in (302, 403)


def test_a_query_posted_by_an_admin_is_forwarded_with_its_body(proxy):
    answer = requests.post(
        proxy + "api/v1/query",
        data={"query": "up"},
        headers={"Authorization": "token admin-token"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["body"] == "query=up"
