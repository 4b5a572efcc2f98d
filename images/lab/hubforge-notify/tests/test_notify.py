"""Integration tests against a real jupyter_server: POST hubforge/notify -> every open events stream."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import Any

import httpx
import pytest
from conftest import PACKAGE_ROOT
from hubforge_notify.cli import default_url
from hubforge_notify.handlers import BROKER_KEY, Broker


async def post(server_url: str, body: Any, token: str | None, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    content = raw if raw is not None else json.dumps(body).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(server_url + "hubforge/notify", content=content, headers=headers)


async def test_authorized_post_reaches_a_connected_tab(sse, server_url, token):
    async with sse() as events:
        reply = await post(server_url, {"message": "  job done  ", "type": "success", "autoClose": False}, token)
        assert reply.status_code == 200, reply.text
        assert reply.json()["delivered_to"] == 1
        notice = await events.next()
    assert notice == {
        "id": reply.json()["id"],
        "timestamp": notice["timestamp"],
        "message": "job done",
        "type": "success",
        "autoClose": False,
        "sender": None,
    }
    assert notice["timestamp"].endswith("+00:00")


async def test_every_open_tab_receives_it(sse, server_url, token):
    async with sse() as first, sse() as second:
        reply = await post(server_url, {"message": "maintenance at 18:00", "sender": "admin"}, token)
        assert reply.json()["delivered_to"] == 2
        one, two = await first.next(), await second.next()
    assert one == two
    assert (one["message"], one["type"], one["autoClose"], one["sender"]) == (
        "maintenance at 18:00",
        "default",
        5000,
        "admin",
    )


@pytest.mark.parametrize("token_value", [None, "wrong-token"])
async def test_unauthenticated_post_is_refused_and_not_delivered(sse, server_url, token, token_value):
    async with sse() as events:
        reply = await post(server_url, {"message": "spoofed"}, token_value)
        assert reply.status_code == 403
        await post(server_url, {"message": "marker"}, token)
        assert (await events.next())["message"] == "marker"  # the refused one never arrived


SERVER_TOKEN = "the-token-jupyterhub-gave-this-server"


async def test_the_servers_own_token_is_checked_here_without_the_hub(sse, server_url, token, monkeypatch):
    """What the hub's broadcast sends: this server's JUPYTERHUB_API_TOKEN, compared in the server itself."""
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", SERVER_TOKEN)
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    async with sse() as events:
        reply = await post(server_url, {"message": "from the hub", "sender": "admin"}, SERVER_TOKEN)
        assert reply.status_code == 200, reply.text
        assert (await events.next())["message"] == "from the hub"
        near_miss = await post(server_url, {"message": "spoofed"}, SERVER_TOKEN[:-1] + "X")
        assert near_miss.status_code == 403
        await post(server_url, {"message": "marker"}, token)
        assert (await events.next())["message"] == "marker"  # the near miss never arrived


@pytest.mark.parametrize("header", ["", "token ", "Basic dXNlcjpwYXNz", f"token {SERVER_TOKEN} extra"])
def test_no_server_token_or_a_malformed_header_is_not_the_servers_token(header):
    from hubforge_notify.handlers import presents_server_token

    assert presents_server_token(f"token {SERVER_TOKEN}", {"JUPYTERHUB_API_TOKEN": SERVER_TOKEN})
    assert not presents_server_token(header, {"JUPYTERHUB_API_TOKEN": SERVER_TOKEN})
    assert not presents_server_token("token ", {})  # outside JupyterHub there is no server token to match


async def test_events_need_authentication(sse, server_url):
    async with httpx.AsyncClient() as client:
        reply = await client.get(server_url + "hubforge/notifications/events")
    assert reply.status_code == 403


BAD_BODIES = [
    ({"message": ""}, "message"),
    ({"message": "   "}, "message"),
    ({"message": "x" * 141}, "message"),
    ({"message": 42}, "message"),
    ({}, "message"),
    ({"message": "hi", "type": "fatal"}, "type"),
    ({"message": "hi", "autoClose": "soon"}, "autoClose"),
    ({"message": "hi", "autoClose": True}, "autoClose"),
    ({"message": "hi", "autoClose": 0}, "autoClose"),
    ({"message": "hi", "autoClose": 600_001}, "autoClose"),
    ({"message": "hi", "sender": 7}, "sender"),
    ({"message": "hi", "html": "<b>"}, "unknown field"),
    (b"not json", "JSON object"),
    (["message", "hi"], "JSON object"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_bad_bodies_get_400_and_are_not_delivered(sse, server_url, token, body, field):
    async with sse() as events:
        raw = body if isinstance(body, bytes) else None
        reply = await post(server_url, body, token, raw=raw)
        assert reply.status_code == 400
        error = reply.json()["message"]
        assert field in error and ", got " in error and "\n" not in error
        await post(server_url, {"message": "marker"}, token)
        assert (await events.next())["message"] == "marker"


async def test_141_characters_is_too_long_but_140_is_fine(sse, server_url, token):
    async with sse() as events:
        assert (await post(server_url, {"message": "x" * 141}, token)).status_code == 400
        assert (await post(server_url, {"message": "x" * 140}, token)).status_code == 200
        assert (await events.next())["message"] == "x" * 140


async def test_markup_is_delivered_unchanged_as_text(sse, server_url, token):
    markup = "<img src=x onerror=alert(1)>"
    async with sse() as events:
        assert (await post(server_url, {"message": markup, "type": "warning"}, token)).status_code == 200
        assert (await events.next())["message"] == markup


async def test_a_closed_tab_is_unsubscribed(sse, server_url, token, jp_serverapp):
    broker = jp_serverapp.web_app.settings[BROKER_KEY]
    async with sse():
        assert len(broker) == 1
    for _ in range(30):  # the server notices the closed connection asynchronously, with no write to fail
        if len(broker) == 0:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the closed stream is still subscribed")


def test_a_lagging_subscriber_loses_its_oldest_notices():
    broker = Broker(queue_size=2)
    queue = broker.subscribe()
    for n in range(3):
        assert broker.publish({"n": n}) == 1
    assert [queue.get_nowait(), queue.get_nowait()] == [{"n": 1}, {"n": 2}]
    broker.unsubscribe(queue)
    assert broker.publish({"n": 3}) == 0


async def cli(*args: str) -> tuple[int, str, str]:
    """Run the console script's module in a subprocess (the server shares this test's event loop)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JPY_"))}
    env["PYTHONPATH"] = str(PACKAGE_ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hubforge_notify.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_posts_to_the_running_server(sse, server_url, token):
    url = server_url + "hubforge/notify"
    async with sse() as events:
        code, out, err = await cli("job done", "--type", "success", "--sticky", "--url", url, "--token", token)
        assert (code, err) == (0, "")
        assert out.startswith("notified 1 open tab(s) (id ") and out.count("\n") == 1
        notice = await events.next()
    assert (notice["message"], notice["type"], notice["autoClose"]) == ("job done", "success", False)


async def test_cli_errors_are_one_clear_line(server_url, token):
    url = server_url + "hubforge/notify"
    code, out, err = await cli("x" * 141, "--url", url, "--token", token)
    assert (code, out) == (1, "") and err.startswith("hubforge-notify: message must be") and err.count("\n") == 1
    code, _, err = await cli("hi", "--url", url, "--token", "wrong")
    assert (code, err) == (1, "hubforge-notify: not authorized (check --token or JUPYTERHUB_API_TOKEN)\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hubforge/notify"
    code, _, err = await cli("hi", "--url", closed, "--token", token)
    assert (code, err) == (1, f"hubforge-notify: no Jupyter server at {closed}\n")


def test_cli_default_url_follows_jupyterhub():
    assert (
        default_url({"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/alice/"})
        == "http://0.0.0.0:8888/user/alice/hubforge/notify"
    )
    assert default_url({"JUPYTERHUB_SERVICE_PREFIX": "/user/bob/"}) == "http://127.0.0.1:8888/user/bob/hubforge/notify"
    assert default_url({}) == "http://127.0.0.1:8888/hubforge/notify"


def test_usage_reports_only_the_quotad_volumes_from_their_own_filesystems(tmp_path):
    from hubforge_notify.handlers import quota_usage

    class Fs:
        f_blocks, f_bfree, f_frsize = 1000, 250, 4096

    seen = []

    def statvfs(path):
        seen.append(path)
        return Fs()

    env = {"HUBFORGE_QUOTAS": json.dumps({"workspace": {"mount": "/home/lab/workspace", "quota": 4096000}})}
    assert quota_usage(env, statvfs) == {
        "workspace": {"mount": "/home/lab/workspace", "quota": 4096000, "size": 4096000, "used": 3072000}
    }
    assert seen == ["/home/lab/workspace"]
    assert quota_usage({}, statvfs) == {} and quota_usage({"HUBFORGE_QUOTAS": "not json"}, statvfs) == {}


async def test_usage_needs_the_users_login(server_url, token, monkeypatch):
    monkeypatch.setenv("HUBFORGE_QUOTAS", json.dumps({"home": {"mount": "/", "quota": 10}}))
    async with httpx.AsyncClient() as client:
        refused = await client.get(server_url + "hubforge/usage")
        answered = await client.get(server_url + "hubforge/usage", headers={"Authorization": f"token {token}"})
    assert refused.status_code == 403
    assert (
        answered.status_code == 200 and answered.json()["home"]["quota"] == 10 and answered.json()["home"]["size"] > 0
    )
