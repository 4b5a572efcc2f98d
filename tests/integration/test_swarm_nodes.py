"""The swarm engine on three nodes of one machine: this host's engine (the manager) and two more engines, each in
a network namespace of its own (tests/support/swarmnodes.py). One worker joins before the stack, one after it is up.

Labs spread over the nodes and run from the stack's registry by digest; a second start, a restart and a volume
reset each happen on the node that holds the user's volumes; a broadcast reaches every node; and a worker that
leaves gives its users a clear error rather than a hang."""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from hub_ext.naming import user_names

from ..support.hubclient import EventListener
from ..support.livestack import approved_user
from ..support.swarmnodes import started
from .test_swarm import LISTENER, put_file, service_of, spawn_failure

pytestmark = pytest.mark.integration
STACK_ENGINE = "swarm"
POOL = f"10.{random.randint(214, 250)}.{random.randint(0, 255)}.0/24"
STACK_ENV = {"LAB_SUBNET_POOL": POOL}
USERS = ("ann", "ben", "cat", "dan", "eve")
LEAVE_SECONDS = 30  # a start on a node that left fails within this, with the reason


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """Two more engines; the first joins now, the second once the stack is up (`nodes`). A swarm this host is already
    in (a user's `invoke up --engine swarm` leaves one) is joined, and left as it was."""
    with started(count=2, join=1) as made:
        yield made


@pytest.fixture(scope="module")
def nodes(live, cluster):
    """The stack is up: forward each worker's registry port (the mesh's part), then the late node joins."""
    cluster.forward_registry(live.stack.options.registry_port)
    cluster.join(cluster.nodes[1])
    return {"manager": live.stack.docker.swarm_node_id(), **{node.name: node.node_id for node in cluster.nodes}}


def task_node(live, user: str) -> str:
    service = service_of(live, user)
    tasks = [t for t in live.stack.docker.tasks(service["ID"]) if t.get("DesiredState") == "running"]
    assert len(tasks) == 1, f"{user}: {len(tasks)} running tasks"
    return tasks[0]["NodeID"]


def worker_of(cluster, node_id: str):
    return next(node for node in cluster.nodes if node.node_id == node_id)


@pytest.fixture(scope="module")
def placed(live, admin, nodes):
    """Every user's lab started once; user -> node id. Swarm spreads tasks over the nodes."""
    apis = {}
    for user in USERS:
        apis[user] = approved_user(live, admin, user)
        apis[user][1].start(user)
    return {user: task_node(live, user) for user in USERS}, apis


def on_a_worker(placed, nodes) -> list[str]:
    return [user for user, node in placed[0].items() if node != nodes["manager"]]


def test_labs_spread_over_the_nodes_and_run_from_the_registry_by_digest(live, cluster, nodes, placed):
    where = placed[0]
    assert len(set(where.values())) >= 2 and set(where.values()) - {nodes["manager"]}, where
    assert nodes["hfnode1"] in where.values(), "no lab on the node that joined after `invoke up`"  # it pulled the image
    registry = f"127.0.0.1:{live.stack.options.registry_port}/"
    for user in USERS:
        image = service_of(live, user)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        assert image.startswith(registry) and "@sha256:" in image, image  # by digest: exactly what the manager built
    late = worker_of(cluster, nodes["hfnode1"]).client()
    assert any(d.startswith(registry) for image in late.images.list() for d in image.attrs.get("RepoDigests") or [])


def test_the_second_start_lands_on_the_node_with_the_volumes_and_finds_the_file(live, nodes, placed):
    user = on_a_worker(placed, nodes)[0]
    api = placed[1][user][1]
    put_file(api, user, "keep.txt", "kept on a worker")
    api.stop(user)
    api.start(user)
    assert task_node(live, user) == placed[0][user]
    constraints = service_of(live, user)["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
    assert f"node.id == {placed[0][user]}" in constraints
    assert api.request("GET", f"user/{user}/api/contents/keep.txt").json()["content"] == "kept on a worker"


def test_a_restart_on_a_worker_keeps_the_file(live, nodes, placed):
    user = on_a_worker(placed, nodes)[-1]
    session, api = placed[1][user]
    put_file(api, user, "restart.txt", "still here")
    before = [
        t["ID"] for t in live.stack.docker.tasks(service_of(live, user)["ID"]) if t.get("DesiredState") == "running"
    ]
    response = session.api("POST", f"hubforge/users/{user}/restart")
    assert response.status_code == 200 and response.json()["status"] == "restarted", response.text
    assert task_node(live, user) == placed[0][user]
    after = [
        t["ID"] for t in live.stack.docker.tasks(service_of(live, user)["ID"]) if t.get("DesiredState") == "running"
    ]
    assert after != before
    assert api.request("GET", f"user/{user}/api/contents/restart.txt").json()["content"] == "still here"


def test_the_volume_manager_and_the_logs_reach_a_lab_on_a_worker(live, nodes, placed):
    """The hub has only its own node's socket: sizes come from a helper on the worker, logs through the service."""
    user = on_a_worker(placed, nodes)[-1]
    session, api = placed[1][user]
    put_file(api, user, "measured.txt", "x" * 50_000)
    response = session.api("GET", f"hubforge/users/{user}/volumes")
    assert response.status_code == 200, response.text
    listing = {v["kind"]: v for v in response.json()["volumes"]}
    assert listing["home"]["exists"] and listing["workspace"]["exists"], listing  # not "not made yet"
    assert (listing["workspace"]["size_bytes"] or 0) >= 50_000, listing
    argv = live.stack.lab_logs_argv(user, follow=False, tail=200)
    assert argv[:3] == ["docker", "service", "logs"], argv
    shown = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert f"/user/{user}/" in shown.stdout + shown.stderr, shown.stdout[-2000:] + shown.stderr[-2000:]


def test_a_broadcast_reaches_labs_on_every_node(live, admin, placed):
    running = {user: placed[1][user][1] for user in USERS}
    listeners = {user: EventListener(api, user) for user, api in running.items()}
    try:
        time.sleep(0.5)
        response = admin.api("POST", "hubforge/broadcast", json={"message": "three nodes, one message", "type": "info"})
        assert response.status_code == 200, response.text
        results = {r["user"]: r["result"] for r in response.json()["results"]}
        assert all(results.get(user) == "delivered" for user in USERS), results
        for user, listener in listeners.items():
            assert listener.wait_for("three nodes, one message", timeout=5) is not None, (
                f"{user} on {placed[0][user][:12]}"
            )
    finally:
        for listener in listeners.values():
            listener.close()


def lab_container(live, cluster, user: str, node_id: str):
    engine = (
        live.stack.docker.client
        if node_id == live.stack.docker.swarm_node_id()
        else worker_of(cluster, node_id).client()
    )
    found = engine.containers.list(filters={"label": [f"hubforge.project={live.project}", f"hubforge.user={user}"]})
    assert len(found) == 1, f"{user}: {len(found)} containers on {node_id[:12]}"
    return found[0]


def test_the_shared_volume_is_shared_by_the_labs_of_one_node(live, cluster, placed):
    """Node-pinned storage: /mnt/shared is a local volume, one per node (README). Shared storage makes it one."""
    by_node: dict[str, list[str]] = {}
    for user, node in placed[0].items():
        by_node.setdefault(node, []).append(user)
    node, (writer, reader, *_) = next((n, users) for n, users in by_node.items() if len(users) >= 2)
    elsewhere = next(users[0] for n, users in by_node.items() if n != node)
    token = f"shared-{random.randint(0, 10**9)}"
    code, output = lab_container(live, cluster, writer, node).exec_run(
        ["sh", "-c", f"echo {token} > /mnt/shared/{writer}.txt"], user="lab"
    )
    assert code == 0, output
    code, output = lab_container(live, cluster, reader, node).exec_run(["cat", f"/mnt/shared/{writer}.txt"], user="lab")
    assert code == 0 and output.decode().strip() == token  # the same node: the same volume
    code, output = lab_container(live, cluster, elsewhere, placed[0][elsewhere]).exec_run(
        ["cat", f"/mnt/shared/{writer}.txt"], user="lab"
    )
    assert code != 0 and token not in output.decode()  # another node: another volume of that name


GUARDED = "10.199.77.1"  # a private address on an interface in a worker's namespace: nothing leaves the machine
PROBE = (
    "import socket\ntry:\n    c = socket.create_connection(('" + GUARDED + "', 9999), timeout=3); print(c.recv(64))\n"
    "except OSError as e:\n    print(type(e).__name__)\n"
)


def guard_tasks_running(live, count: int, timeout: float = 60) -> str:
    """ "" once the guard's global service runs `count` tasks, else what its tasks say."""
    deadline = time.monotonic() + timeout
    states = "no guard service"
    while time.monotonic() < deadline:
        guard = live.stack.docker.services({"hubforge.project": live.project, "hubforge.role": "netguard"})
        tasks = live.stack.docker.tasks(guard[0]["ID"]) if guard else []
        if sum(1 for t in tasks if (t.get("Status") or {}).get("State") == "running") >= count:
            time.sleep(1)  # the guard installs its rules as it starts
            return ""
        states = "; ".join(
            f"{t.get('NodeID', '')[:6]} {t['Status'].get('State')} {t['Status'].get('Err', '')}" for t in tasks
        )
        time.sleep(0.5)
    return states


def test_the_network_guard_keeps_labs_on_every_node_off_private_addresses(live, cluster, placed):
    """The attack first: with the guard's service gone, a lab on a worker reads a secret from a private address of
    its node. With the guard back (a global service, so on that worker too) the same connection is refused."""
    user = next(u for u, n in placed[0].items() if n == cluster.nodes[0].node_id)
    node = cluster.nodes[0]
    node.nsenter("ip", "link", "add", "hfguard0", "type", "veth", "peer", "name", "hfguard1")  # no dummy driver here
    node.nsenter("ip", "addr", "add", f"{GUARDED}/32", "dev", "hfguard0")
    for end in ("hfguard0", "hfguard1"):
        node.nsenter("ip", "link", "set", end, "up")
    bounded = LISTENER.replace("'0.0.0.0'", f"'{GUARDED}'").replace("s.listen(4)", "s.listen(4); s.settimeout(120)")
    listener = subprocess.Popen(
        ["nsenter", f"--net={node.netns}", "python3", "-c", bounded]
    )  # nsenter execs: the pid is python's
    lab = lab_container(live, cluster, user, node.node_id)
    try:
        time.sleep(1)
        problem = guard_tasks_running(live, 3)
        assert not problem, f"the guard does not run on every node: {problem}"
        assert "ConnectionRefusedError" in lab.exec_run(["python3", "-c", PROBE], user="lab").output.decode()
        live.stack.docker.remove_service(f"{live.project}_netguard")  # its tasks remove their rules as they stop
        deadline, leaked = time.monotonic() + 30, ""
        while "walt-secret" not in leaked and time.monotonic() < deadline:
            time.sleep(1)
            leaked = lab.exec_run(["python3", "-c", PROBE], user="lab").output.decode()
        assert "walt-secret" in leaked, leaked  # unguarded: the lab reads a private address of its node
        live.stack.guard_nodes(live.stack.pinned(json.loads(live.stack.state_file.read_text())["images"]["hub"]))
        assert not guard_tasks_running(live, 3)
        assert "ConnectionRefusedError" in lab.exec_run(["python3", "-c", PROBE], user="lab").output.decode()
    finally:
        listener.kill()
        node.nsenter("ip", "link", "delete", "hfguard0", check=False)


def test_status_names_each_node_and_where_each_lab_runs(live, nodes, placed):
    state = live.stack.status()
    assert sorted(n["role"] for n in state["nodes"]) == ["manager", "worker", "worker"]
    labels = {n["id"]: n["name"] for n in state["nodes"]}
    assert len(set(labels.values())) == 3  # one hostname on every engine here: status tells them apart by id
    for user in USERS:
        assert state["lab_placement"][user]["node"] == labels[placed[0][user]]


def test_a_volume_reset_removes_the_volumes_on_their_node(live, cluster, nodes, placed):
    user = on_a_worker(placed, nodes)[0]
    session, api = placed[1][user]
    names = user_names(live.stack.options.volume_prefix, user)
    worker = worker_of(cluster, placed[0][user]).client()
    assert names.volumes["workspace"] in {v.name for v in worker.volumes.list()}
    api.stop(user)
    response = session.api("POST", f"hubforge/users/{user}/volumes/reset", json={"volumes": ["workspace"]})
    assert response.status_code == 200, response.text
    assert response.json()["results"]["workspace"]["result"] == "removed", response.text
    left = {v.name for v in worker.volumes.list()}
    assert names.volumes["workspace"] not in left and names.volumes["home"] in left
    assert not [
        s
        for s in live.stack.docker.services({"hubforge.project": live.project})
        if (s["Spec"].get("Labels") or {}).get("hubforge.role") == "helper"
    ]  # the helper service is gone
    api.start(user)
    assert task_node(live, user) == placed[0][user]
    assert api.request("GET", f"user/{user}/api/contents/keep.txt").status_code == 404


def test_a_worker_that_leaves_gives_its_users_a_clear_error_and_an_admin_can_forget_it(
    live, cluster, nodes, placed, admin_api
):
    user = on_a_worker(placed, nodes)[0]
    session, api = placed[1][user]
    put_file(api, user, "before-leave.txt", "on the node that leaves")
    api.stop(user)
    cluster.leave(worker_of(cluster, placed[0][user]))
    started = time.monotonic()
    message = spawn_failure(api, user)
    assert time.monotonic() - started < LEAVE_SECONDS
    assert f"{user}'s files are on node" in message and ("down" in message or "left the swarm" in message), message
    assert f"/hub/api/hubforge/users/{user}/node" in message  # what an admin can do about it
    assert session.api("DELETE", f"hubforge/users/{user}/node").status_code == 403  # not the user's own decision
    response = admin_api.request("DELETE", f"hub/api/hubforge/users/{user}/node")
    assert response.status_code == 200 and response.json() == {"user": user, "forgot": placed[0][user]}, response.text
    api.start(user)
    assert task_node(live, user) != placed[0][user]
    assert (
        api.request("GET", f"user/{user}/api/contents/before-leave.txt").status_code == 404
    )  # new volumes, on a node that is here
