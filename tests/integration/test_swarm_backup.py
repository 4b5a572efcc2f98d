"""`invoke backup` and `invoke restore --user` on the swarm engine with a user's volumes on a worker (issue 30): this
host's engine (the manager) and one more engine in a network namespace of its own (tests/support/swarmnodes.py).

The repository is restic's REST server (Debian's `rclone serve restic`) on the manager's address on the nodes'
bridge, which only this test owns: every node reaches it, as a real swarm reaches a `rest:` repository. A backup makes
one snapshot per node, under one run; a user's files on the worker are deleted, and `invoke restore latest --user`
brings them back there while another user's lab keeps running; a whole restore (`--force`) puts the worker's
volumes back on the worker. A folder on the manager as the repository is refused in one line while the worker holds
volumes."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hub_ext.naming import user_names

from ..support.livestack import approved_user, free_port
from ..support.livestack import run_invoke as invoke
from ..support.swarmnodes import MANAGER, started
from .test_swarm import put_file, service_of

pytestmark = pytest.mark.integration
STACK_ENGINE = "swarm"
POOL = f"10.{random.randint(214, 250)}.{random.randint(0, 255)}.0/24"
REST_PORT = free_port()
REST_USER, REST_PASSWORD = "hubforge-test", f"rest-{random.randint(0, 10**9)}"
# the REST server's credentials in the URL: they reach the worker's restic in the helper's swarm secret only
STACK_ENV = {
    "LAB_SUBNET_POOL": POOL,
    "BACKUP_REPOSITORY": f"rest:http://{REST_USER}:{REST_PASSWORD}@{MANAGER}:{REST_PORT}/",
}
RESTIC_CACHE = Path(os.path.expanduser("~/.cache/hubforge/restic"))
START_TIMEOUT = 30


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One more engine, joined before the stack starts."""
    with started(count=1) as made:
        yield made


@pytest.fixture(scope="module", autouse=True)
def rest_server(cluster, tmp_path_factory):
    """restic's REST server on the manager's address on the nodes' bridge (made by `cluster`), with a user."""
    if shutil.which("rclone") is None:
        pytest.fail("rclone is not installed (apt-get install rclone; .ci/run installs it)")
    folder = tmp_path_factory.mktemp("rest-repository")
    server = subprocess.Popen(
        [
            "rclone",
            "serve",
            "restic",
            str(folder),
            "--addr",
            f"{MANAGER}:{REST_PORT}",
            "--user",
            REST_USER,
            "--pass",
            REST_PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while (
        subprocess.run(["ss", "-ltn", f"sport = :{REST_PORT}"], capture_output=True, text=True).stdout.count(MANAGER)
        == 0
    ):
        assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    yield folder
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def nodes(live, cluster):
    cluster.forward_registry(live.stack.options.registry_port)  # the routing mesh's part, as in test_swarm_nodes
    yield {"manager": live.stack.docker.swarm_node_id(), "worker": cluster.nodes[0].node_id}
    shutil.rmtree(RESTIC_CACHE / live.project, ignore_errors=True)


def running_tasks(live, user: str) -> list[dict]:
    return [t for t in live.stack.docker.tasks(service_of(live, user)["ID"]) if t.get("DesiredState") == "running"]


def task_node(live, user: str) -> str:
    tasks = running_tasks(live, user)
    assert len(tasks) == 1, f"{user}: {len(tasks)} running tasks"
    return tasks[0]["NodeID"]


@pytest.fixture(scope="module")
def users(live, admin, nodes):
    """wes's lab on the worker (the least loaded node takes a first lab), then mia's, each with a file."""
    apis = {}
    for user in ("wes", "mia"):
        apis[user] = approved_user(live, admin, user)[1]
        apis[user].start(user)
        put_file(apis[user], user, "keep.txt", f"the notes of {user}")
    assert task_node(live, "wes") == nodes["worker"]
    return apis


def test_a_local_repository_is_refused_while_a_worker_holds_volumes(live, users, tmp_path):
    env_file = live.stack.options.run_dir / ".env"
    kept = env_file.read_text()
    try:
        env_file.write_text(kept.replace(STACK_ENV["BACKUP_REPOSITORY"], str(tmp_path / "repository")))
        refused = invoke(live, "backup")
    finally:
        env_file.write_text(kept)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "the swarm's other nodes cannot reach" in refused.stderr and "rest: or s3:" in refused.stderr
    assert not (tmp_path / "repository").exists()  # refused before anything was made


def test_a_backup_takes_a_snapshot_on_each_node_in_one_run(live, cluster, users, rest_server):
    started = time.monotonic()
    done = invoke(live, "backup", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"backup of two nodes: {time.monotonic() - started:.1f} s")
    assert REST_PASSWORD not in done.stdout + done.stderr
    assert re.search(r"node \S+ \(\w+\): \d+ volumes; snapshot [0-9a-f]{8}", done.stdout), done.stdout
    run = re.search(r"invoke restore ([0-9a-f]{8})", done.stdout).group(1)
    listed = invoke(live, "backup", "--list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    row = next(line for line in listed.stdout.splitlines() if run in line)
    assert "manager" in row and cluster.nodes[0].node_id[:6] in row, listed.stdout
    helpers = live.stack.docker.services({"hubforge.project": live.project, "hubforge.role": "helper"})
    secrets = live.stack.docker.client.api.secrets(filters={"label": f"hubforge.project={live.project}"})
    assert not helpers and not secrets, (helpers, secrets)  # each helper and its secret removed
    worker = cluster.nodes[0].client()
    assert not [c for c in worker.containers.list(all=True) if c.labels.get("hubforge.role") == "backup"]


def test_one_users_restore_on_the_worker_while_another_lab_keeps_running(live, cluster, nodes, users):
    mia_task = running_tasks(live, "mia")
    gone = users["wes"].request("DELETE", "user/wes/api/contents/keep.txt")
    assert gone.status_code == 204, gone.text
    started = time.monotonic()
    done = invoke(live, "restore", "latest", "--user", "wes", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"restore of one user on the worker: {time.monotonic() - started:.1f} s")
    assert "restored" in done.stdout and "wes" in done.stdout, done.stdout
    assert [t["ID"] for t in running_tasks(live, "mia")] == [t["ID"] for t in mia_task]  # the same task ran on
    response = users["mia"].request("GET", "user/mia/api/contents/keep.txt")
    assert response.status_code == 200 and response.json()["content"] == "the notes of mia"
    assert not users["wes"].user("wes")["servers"]  # the hub stopped wes's lab for the restore, and knows it
    users["wes"].start("wes")
    assert task_node(live, "wes") == nodes["worker"]
    response = users["wes"].request("GET", "user/wes/api/contents/keep.txt")
    assert response.status_code == 200 and response.json()["content"] == "the notes of wes", response.text


def test_a_restore_of_an_unknown_user_names_the_users_of_every_node(live, users):
    nobody = invoke(live, "restore", "latest", "--user", "cy")
    assert nobody.returncode == 1 and "its users: mia, wes" in nobody.stderr, nobody.stderr


def test_the_whole_stack_comes_back_with_the_workers_volumes_put_back_on_the_worker(live, cluster, users):
    """Last: `--force` stops the stack (its registry too); the worker's part runs from the images it holds."""
    gone = users["wes"].request("DELETE", "user/wes/api/contents/keep.txt")
    assert gone.status_code == 204, gone.text
    started = time.monotonic()
    done = invoke(live, "restore", "latest", "--force", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"whole restore of two nodes: {time.monotonic() - started:.1f} s")
    assert "skipped" not in done.stdout, done.stdout
    workspace = user_names(live.stack.options.volume_prefix, "wes").volumes["workspace"]
    hub_image = live.stack.pinned(json.loads(live.stack.state_file.read_text())["images"]["hub"])
    read = (
        cluster.nodes[0]
        .client()
        .containers.run(
            hub_image,
            ["/srv/workspace/keep.txt"],
            entrypoint=["cat"],
            remove=True,
            volumes={workspace: {"bind": "/srv/workspace", "mode": "ro"}},
            network_mode="none",
        )
    )
    assert read.decode() == "the notes of wes"
