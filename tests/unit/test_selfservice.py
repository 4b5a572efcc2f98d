"""Self-service and broadcast: validation, authorization, and the Docker-facing steps with a fake daemon."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import docker
import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from hub_ext.naming import user_names
from hub_ext.spawn import spawner as hub_spawner
from hub_ext.spawn.spawner import HubforgeSpawner, disk_usage, server_token
from hub_ext.web.actions import BadRequest, broadcast_request, parse_json, volume_kinds, volume_listing
from hub_ext.web.selfservice import authorize, deliver, exclusively, reset_volumes, restart_server, volume_sizes


# -- validation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "expected"),
        ([], "expected"),
        ({"volumes": []}, "non-empty list"),
        ({"volumes": "workspace"}, "non-empty list"),
        ({"volumes": ["../etc"]}, "not paths"),
        ({"volumes": ["/var/lib/docker"]}, "not paths"),
        ({"volumes": ["shared"]}, "unknown volume 'shared'"),
        ({"volumes": ["workspace", "workspace"]}, "named twice"),
        ({"volumes": [1]}, "each volume is a name"),
        ({"volumes": ["home"], "force": True}, "expected"),
    ],
)
def test_bad_volume_requests(body, message):
    with pytest.raises(BadRequest, match=message):
        volume_kinds(body)


def test_good_volume_request_keeps_order():
    assert volume_kinds({"volumes": ["cache", "home"]}) == ["cache", "home"]


def test_malformed_json_is_a_bad_request():
    with pytest.raises(BadRequest, match="not JSON"):
        parse_json(b"{volumes: [")


def test_volume_listing_never_offers_the_shared_volume():
    names = user_names("jupyterlab", "first.last")
    listing = volume_listing(names.volumes, {names.volumes["home"]: 2048, names.volumes["workspace"]: None})
    assert [v["kind"] for v in listing] == ["home", "workspace", "cache"]
    assert listing[0]["size_bytes"] == 2048 and listing[2]["exists"] is False
    assert all("shared" not in v["volume"] for v in listing)


USERS = ["alice", "bob"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"message": ""}, "message must be 1 to 140"),
        ({"message": "   "}, "message must be 1 to 140"),
        ({"message": "x" * 141}, "at most 140 characters, got 141"),
        ({"message": "hi", "type": "shout"}, "type must be one of"),
        ({"message": "hi", "autoClose": "soon"}, "autoClose must be false"),
        ({"message": "hi", "autoClose": True}, "autoClose must be false"),
        ({"message": "hi", "autoClose": 0}, "autoClose must be false"),
        ({"message": "hi", "recipients": []}, "recipients must be"),
        ({"message": "hi", "recipients": "alice"}, "recipients must be"),
        ({"message": "hi", "recipients": ["mallory"]}, "unknown recipients: 'mallory'"),
        ({"message": "hi", "html": True}, "unknown fields: html"),
        (["hi"], "expected a JSON object"),
    ],
)
def test_bad_broadcasts(body, message):
    with pytest.raises(BadRequest, match=message):
        broadcast_request(body, USERS)


def test_good_broadcast():
    request = broadcast_request(
        {"message": " x" * 70, "type": "warning", "autoClose": False, "recipients": ["bob", "bob"]}, USERS
    )
    assert len(request.message) == 139 and request.type == "warning" and request.auto_close is False
    assert request.recipients == ("bob",)
    assert broadcast_request({"message": "hi"}, USERS).recipients is None
    markup = "<img src=x onerror=alert(1)>"
    assert broadcast_request({"message": markup}, USERS).payload("admin")["message"] == markup  # text, as typed


# -- authorization --------------------------------------------------------------------------------------------
class Who:
    def __init__(self, name, admin=False):
        self.name, self.admin = name, admin


class HandlerStandIn:
    """The three things `authorize` asks of a handler: who is calling, their scopes, and user lookup."""

    def __init__(self, caller, scopes, users=("alice", "bob")):
        self.current_user, self.scopes, self.users = caller, set(scopes), {n: Who(n) for n in users}

    def has_scope(self, scope):
        return scope in self.scopes or scope.split("!")[0] in self.scopes

    def find_user(self, name):
        return self.users.get(name)


@pytest.mark.parametrize(
    ("caller", "scopes", "target", "status"),
    [
        (Who("alice"), {"servers!user=alice"}, "alice", None),
        (Who("alice"), {"servers!user=alice"}, "bob", 403),
        (Who("alice"), {"read:users!user=alice"}, "alice", 403),  # a token without the servers scope
        (Who("root", admin=True), {"servers"}, "bob", None),
        (Who("root", admin=True), {"servers"}, "nobody", 404),
        (None, set(), "alice", 403),
    ],
)
def test_authorize(caller, scopes, target, status):
    handler = HandlerStandIn(caller, scopes)
    if status is None:
        assert authorize(handler, target).name == target
    else:
        with pytest.raises(web.HTTPError) as caught:
            authorize(handler, target)
        assert caught.value.status_code == status


def test_admin_pages_need_admin_servers():
    with pytest.raises(web.HTTPError) as caught:
        authorize(HandlerStandIn(Who("alice"), {"servers!user=alice"}), None, admin_only=True)
    assert caught.value.status_code == 403
    assert authorize(HandlerStandIn(Who("root", True), {"admin:servers"}), None, admin_only=True).name == "root"


def test_approval_pages_need_admin_users_not_just_admin_servers():
    # a role that may manage servers (say, an operator's) may not decide who has an account
    operator = HandlerStandIn(Who("ops"), {"admin:servers"})
    with pytest.raises(web.HTTPError) as caught:
        authorize(operator, None, admin_only=True, scope="admin:users")
    assert caught.value.status_code == 403
    assert (
        authorize(HandlerStandIn(Who("root", True), {"admin:users"}), None, admin_only=True, scope="admin:users").name
        == "root"
    )


def test_a_second_restart_or_reset_of_one_user_is_refused_while_the_first_runs():
    async def scenario():
        first_inside, release = asyncio.Event(), asyncio.Event()

        async def first():
            async with exclusively("alice"):
                first_inside.set()
                await release.wait()

        task = asyncio.create_task(first())
        await first_inside.wait()
        with pytest.raises(web.HTTPError) as caught:
            async with exclusively("alice"):
                raise AssertionError("two operations on alice's server ran at once")
        async with exclusively("bob"):  # another user is not held up
            pass
        release.set()
        await task
        async with exclusively("alice"):  # and alice's next one runs once the first is done
            pass
        return caught.value.status_code

    assert asyncio.run(scenario()) == 409


class CountingClient:
    """docker-py's client as far as `df` goes: counts calls and the threads they ran on."""

    def __init__(self):
        import threading

        self.calls, self.threads, self._threading = 0, set(), threading

    def df(self):
        self.calls += 1
        self.threads.add(self._threading.get_ident())
        return {"Volumes": [{"Name": "v", "UsageData": {"Size": 7}}]}


def test_volume_sizes_are_measured_once_a_minute_off_the_loop(monkeypatch):
    import threading

    monkeypatch.setitem(hub_spawner._usage, "future", None)
    spawner = type("S", (), {"client": CountingClient()})()

    async def twenty_users():
        return await asyncio.gather(*(disk_usage(spawner.client) for _ in range(20)))

    answers = asyncio.run(twenty_users())
    assert spawner.client.calls == 1 and all(a["Volumes"][0]["UsageData"]["Size"] == 7 for a in answers)
    assert threading.get_ident() not in spawner.client.threads
    monkeypatch.setitem(hub_spawner._usage, "at", hub_spawner._usage["at"] - hub_spawner.SIZES_TTL_S - 1)
    asyncio.run(twenty_users())  # a new loop, and the minute is over: measured again, once
    assert spawner.client.calls == 2


# -- the Docker-facing steps, against a fake daemon -----------------------------------------------------------
class FakeDaemon:
    """Stands in for DockerSpawner's async gateway: volumes by name, and restarts by container id."""

    def __init__(self, volumes=(), in_use=(), container_state=None, owners=None):
        self.volumes, self.in_use, self.calls = set(volumes), set(in_use), []
        self.owners = owners or {}  # volume -> the project its label names (else this one, "p")
        self.container_state = {"Running": True} if container_state is None else container_state  # {}: gone

    async def __call__(self, method, *args, **kwargs):
        assert hasattr(docker.APIClient, method), f"docker's APIClient has no method {method!r}"
        self.calls.append((method, args))
        if method == "remove_volume":
            name = args[0]
            if name in self.in_use:
                raise FakeAPIError(409, f"remove {name}: volume is in use")
            if name not in self.volumes:
                raise FakeAPIError(404, "no such volume")
            self.volumes.discard(name)
            return None
        if method == "restart":
            return None
        if method == "inspect_volume":
            if args[0] not in self.volumes:
                raise FakeAPIError(404, "no such volume")
            return {"Name": args[0], "Labels": {"hubforge.project": self.owners.get(args[0], "p")}}
        if method == "volumes":  # Docker's name filter matches substrings, any of the given ones
            wanted = kwargs["filters"]["name"]
            return {
                "Volumes": [
                    {"Name": n, "Labels": {"hubforge.project": self.owners.get(n, "p")}}
                    for n in sorted(self.volumes)
                    if any(w in n for w in wanted)
                ]
            }
        if method == "inspect_container":
            if self.container_state == {}:
                raise FakeAPIError(404, "no such container")
            return {
                "State": self.container_state,
                "Config": {"Env": ["PATH=/bin", f"JUPYTERHUB_API_TOKEN={SERVER_TOKEN}"]},
            }
        raise AssertionError(f"unexpected call {method}")


class FakeAPIError(Exception):
    def __init__(self, status, explanation):
        super().__init__(explanation)
        self.response = type("Response", (), {"status_code": status})()
        self.explanation = explanation


class Server:
    def __init__(self, url):
        self.url, self.ip, self.port = url, "10.0.0.2", 8888


class FakeSpawner:
    def __init__(self, daemon, active=True, ready=True, pending=None, url="http://127.0.0.1:1/user/alice/"):
        self.docker, self.active, self.ready, self.pending = daemon, active, ready, pending
        self.object_id, self.server, self.project = "c0ffee" * 10, Server(url), "p"
        self.container_address = ("10.0.0.2", 8888)  # where Docker says the container is now

    async def get_ip_and_port(self):
        return self.container_address

    restart_lab = HubforgeSpawner.restart_lab  # the compose engine's own restart and liveness check, on the fake daemon
    lab_alive = HubforgeSpawner.lab_alive
    lab_environment = HubforgeSpawner.lab_environment
    remove_volumes = HubforgeSpawner.remove_volumes
    remove_quota_files = HubforgeSpawner.remove_quota_files
    volume_sizes = HubforgeSpawner.volume_sizes


NAMES = user_names("jupyterlab", "alice")
SERVER_TOKEN = "the-labs-own-token"


def test_a_broadcast_uses_the_labs_own_token_read_back_once_after_a_hub_restart():
    daemon = FakeDaemon()
    spawner = FakeSpawner(daemon)
    spawner.api_token = "given-at-spawn"
    assert asyncio.run(server_token(spawner)) == "given-at-spawn" and daemon.calls == []
    spawner.api_token = ""  # a recreated hub: the spawner's state does not keep the token
    assert asyncio.run(server_token(spawner)) == SERVER_TOKEN
    assert asyncio.run(server_token(spawner)) == SERVER_TOKEN
    assert [call[0] for call in daemon.calls] == ["inspect_container"]  # read once, then kept
    gone = FakeSpawner(FakeDaemon(container_state={}))
    gone.api_token, gone.user, gone.log = "", type("User", (), {"name": "alice"})(), logging.getLogger("test")
    assert asyncio.run(server_token(gone)) == ""  # the delivery then fails with that reason


def test_reset_removes_only_the_chosen_volumes():
    daemon = FakeDaemon(volumes=NAMES.volumes.values())
    results = asyncio.run(reset_volumes(FakeSpawner(daemon, active=False), NAMES, ["workspace"]))
    assert results == {"workspace": {"volume": NAMES.volumes["workspace"], "result": "removed"}}
    assert daemon.volumes == {NAMES.volumes["home"], NAMES.volumes["cache"]}


def test_reset_reports_not_found_and_failures():
    daemon = FakeDaemon(volumes=[NAMES.volumes["home"]], in_use=[NAMES.volumes["home"]])
    results = asyncio.run(reset_volumes(FakeSpawner(daemon, active=False), NAMES, ["home", "cache"]))
    assert results["home"]["result"] == "failed" and "in use" in results["home"]["reason"]
    assert results["cache"] == {"volume": NAMES.volumes["cache"], "result": "not found"}


def test_reset_is_refused_while_running():
    daemon = FakeDaemon(volumes=NAMES.volumes.values())
    with pytest.raises(web.HTTPError) as caught:
        asyncio.run(reset_volumes(FakeSpawner(daemon, active=True), NAMES, ["workspace"]))
    assert caught.value.status_code == 409 and daemon.calls == []


@pytest.mark.parametrize(("kwargs", "status"), [({"active": False, "ready": False}, 409), ({"pending": "spawn"}, 409)])
def test_restart_refused_unless_running(kwargs, status):
    daemon = FakeDaemon()
    with pytest.raises(web.HTTPError) as caught:
        asyncio.run(restart_server(FakeSpawner(daemon, **kwargs), "alice", None))
    assert caught.value.status_code == status and daemon.calls == []


class LabStandIn(RequestHandler):
    """A lab's hubforge-notify endpoint: records what it got, answers like the real one."""

    received: list = []

    def post(self, prefix):
        if self.request.headers.get("Authorization") != "token good":
            raise web.HTTPError(403)
        LabStandIn.received.append(json.loads(self.request.body))
        self.write({"id": "n1", "delivered_to": 2})


class HostileLab(RequestHandler):
    """A lab whose owner changed its notify endpoint to answer with something that is not JSON."""

    def post(self, prefix):
        self.write("<html>not json</html>" if prefix == "mallory" else "[1, 2]")


class LabAPI(RequestHandler):
    def get(self, prefix):
        self.write("lab")


async def serve_and(action):
    sock, port = bind_unused_port()
    server = HTTPServer(
        Application(
            [
                (r"/user/([^/]+)/hubforge/notify", LabStandIn),
                (r"/user/([^/]+)/api", LabAPI),
                (r"/hostile/([^/]+)/hubforge/notify", HostileLab),
            ]
        )
    )
    server.add_sockets([sock])
    try:
        return await action(port)
    finally:
        server.stop()


async def restart_against_lab(port):
    daemon = FakeDaemon()
    spawner = FakeSpawner(daemon, url=f"http://127.0.0.1:{port}/user/alice/")
    moved = []

    async def on_move():
        moved.append(True)

    spawner.server.ip = "10.0.0.9"  # the container comes back with another address than recorded
    result = await restart_server(spawner, "alice", on_move)
    return result, daemon, moved


def test_restart_restarts_the_same_container_and_tells_the_proxy_if_it_moved():
    result, daemon, moved = asyncio.run(serve_and(restart_against_lab))
    assert result["status"] == "restarted" and result["container"] == "c0ffee" * 10
    assert daemon.calls[0] == ("restart", ("c0ffee" * 10,))
    assert {call[0] for call in daemon.calls[1:]} == {"inspect_container"}
    assert moved == [True]


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"Running": False, "ExitCode": 137}, "the lab's container stopped (exit code 137)"),
        ({}, "the lab's container is gone"),
    ],
)
def test_a_restart_whose_container_dies_fails_at_once_with_the_reason(state, reason):
    async def unreachable_lab():
        spawner = FakeSpawner(FakeDaemon(container_state=state), url="http://127.0.0.1:9/user/alice/")
        return await asyncio.wait_for(restart_server(spawner, "alice", None), timeout=5)  # not READY_TIMEOUT_S

    result = asyncio.run(unreachable_lab())
    assert result["status"] == "failed" and result["reason"].startswith(reason)


def test_delivery_results():
    LabStandIn.received = []

    async def scenario(port):
        url = f"http://127.0.0.1:{port}/user/alice/"
        ok = await deliver("alice", url, {"message": "<b>hi</b>", "type": "info"}, "good")
        refused = await deliver("alice", url, {"message": "x"}, "stolen")
        missing = await deliver("bob", f"http://127.0.0.1:{port}/nothing/", {"message": "x"}, "good")
        return ok, refused, missing

    ok, refused, missing = asyncio.run(serve_and(scenario))
    assert ok == {"user": "alice", "result": "delivered", "tabs": 2}
    assert refused == {"user": "alice", "result": "failed", "reason": "the lab answered 403"}
    assert missing["result"] == "failed" and "no notification extension" in missing["reason"]
    assert LabStandIn.received == [{"message": "<b>hi</b>", "type": "info"}]


def test_delivery_to_an_unreachable_lab_fails_with_a_reason():
    sock, port = bind_unused_port()
    sock.close()
    result = asyncio.run(deliver("alice", f"http://127.0.0.1:{port}/user/alice/", {"message": "x"}, "t"))
    assert result["result"] == "failed" and result["reason"]


def test_a_lab_answering_garbage_fails_only_its_own_delivery():
    """It used to raise out of the broadcast: a 500 for everyone, with no audit line and no metrics."""

    async def scenario(port):
        return await asyncio.gather(
            deliver("mallory", f"http://127.0.0.1:{port}/hostile/mallory/", {"message": "x"}, "good"),
            deliver("trudy", f"http://127.0.0.1:{port}/hostile/trudy/", {"message": "x"}, "good"),
            deliver("alice", f"http://127.0.0.1:{port}/user/alice/", {"message": "x"}, "good"),
        )

    garbage, not_an_object, ok = asyncio.run(serve_and(scenario))
    assert garbage == {"user": "mallory", "result": "failed", "reason": "the lab answered something that is not JSON"}
    assert not_an_object == {"user": "trudy", "result": "delivered", "tabs": None}
    assert ok["result"] == "delivered"


def test_the_volume_manager_sees_volumes_made_or_removed_since_the_last_measurement(monkeypatch):
    monkeypatch.setitem(hub_spawner._usage, "future", None)
    measured = {
        "Volumes": [
            {"Name": NAMES.volumes["home"], "UsageData": {"Size": 4096}},
            {"Name": NAMES.volumes["cache"], "UsageData": {"Size": 10}},
        ]
    }
    spawner = FakeSpawner(
        FakeDaemon(volumes=[NAMES.volumes["home"], NAMES.volumes["workspace"], "jupyterlab-alicex_home"]), active=False
    )
    spawner.client = type("Client", (), {"df": staticmethod(lambda: measured)})()

    sizes = asyncio.run(volume_sizes(spawner, NAMES.volumes))
    # home: measured; workspace: made since the measurement (exists, size unknown); cache: removed since
    assert sizes == {NAMES.volumes["home"]: 4096, NAMES.volumes["workspace"]: None}


def test_another_projects_volumes_are_neither_listed_nor_deleted(monkeypatch):
    # two projects configured with one prefix: the names collide, the labels tell them apart
    monkeypatch.setitem(hub_spawner._usage, "future", None)
    daemon = FakeDaemon(volumes=NAMES.volumes.values(), owners={NAMES.volumes["workspace"]: "production"})
    spawner = FakeSpawner(daemon, active=False)
    spawner.client = type("Client", (), {"df": staticmethod(lambda: {"Volumes": []})})()
    assert set(asyncio.run(volume_sizes(spawner, NAMES.volumes))) == {NAMES.volumes["home"], NAMES.volumes["cache"]}
    results = asyncio.run(reset_volumes(spawner, NAMES, ["workspace", "cache"]))
    assert results["workspace"] == {
        "volume": NAMES.volumes["workspace"],
        "result": "failed",
        "reason": "it belongs to the hubforge project 'production'",
    }
    assert results["cache"]["result"] == "removed"
    assert NAMES.volumes["workspace"] in daemon.volumes


def test_each_project_has_its_own_volume_names_and_the_default_keeps_the_old_ones():
    from hub_ext.naming import default_volume_prefix
    from hubforge.deploy import StackOptions

    assert StackOptions(project="hubforge", run_dir=Path("/x")).volume_prefix == "jupyterlab"  # existing data stays
    staging = StackOptions(project="staging", run_dir=Path("/x")).volume_prefix
    assert staging == default_volume_prefix("staging") == "staging-jupyterlab"
    assert user_names(staging, "alice").volumes["home"] != user_names("jupyterlab", "alice").volumes["home"]


def test_a_starting_lab_is_polled_often_but_its_container_checked_once_a_second(monkeypatch):
    """Each readiness poll of a lab that is not listening yet is one refused connection; the check that its container
    still runs is a Docker call, made at the first poll and then at most every alive_interval."""
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there: every poll is refused
    checks = []

    async def alive():
        checks.append(asyncio.get_running_loop().time())

    async def run():
        return await hub_spawner.lab_answers(f"http://127.0.0.1:{port}/", 0.5, 0.02, alive=alive, alive_interval=0.2)

    assert asyncio.run(run()) is False
    assert 2 <= len(checks) <= 4  # the first poll, then once per 0.2 s of a 0.5 s wait: not once per 0.02 s poll

    async def dead():
        raise RuntimeError("the lab's container stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        asyncio.run(hub_spawner.lab_answers(f"http://127.0.0.1:{port}/", 5, 0.02, alive=dead))
