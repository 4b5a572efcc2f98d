"""`invoke up` itself, run as a user runs it, and labs that outlive the hub.

One stack, started by the real task in a subprocess (its own stack_dir, project, ports and users), taken
through what happens to a team's hub over time: a first `up` and a second that changes nothing, `status
--json`, a settings change that recreates the hub while a kernel keeps its state, a lab killed on its
own, a Docker daemon restart, and `invoke down`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from hub_ext.naming import default_volume_prefix, user_names

from ..support.helpers import wait_until
from ..support.hubclient import HubAPI, HubSession, KernelClient, plain_get
from ..support.livestack import ADMIN, PASSWORD, free_port, invoke_for

pytestmark = pytest.mark.integration
PROJECT_LABEL = "hubforge.project"
DEAD_LAB_DEADLINE = 60  # seconds: the promise for noticing and removing a dead lab


class InvokedStack:
    """A stack driven only through `python -m invoke ...`, as the README tells a user to."""

    def __init__(self, stack_dir: Path) -> None:
        self.project = f"hfl{secrets.token_hex(3)}"
        self.stack_dir = stack_dir
        self.port, self.http_port = free_port(), free_port()
        self.url = f"https://hub.localhost:{self.port}/"  # labs at <user>.hub.localhost (tests/support/localdns.py)

    def lab_name(self, user: str) -> str:
        """The lab container's name, with the volume prefix `invoke up` gives this project."""
        return user_names(default_volume_prefix(self.project), user).container

    @property
    def run_dir(self) -> Path:
        return self.stack_dir / self.project

    def invoke(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return invoke_for(self.project, self.stack_dir, *args, timeout=timeout)

    def up(self) -> subprocess.CompletedProcess[str]:
        result = self.invoke("up", "--port", str(self.port), "--http-port", str(self.http_port), "--bind", "127.0.0.1")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    def hub(self):
        (hub,) = docker.from_env().containers.list(
            all=True,
            filters={"label": [f"com.docker.compose.project={self.project}", "com.docker.compose.service=hub"]},
        )
        return hub

    def labs(self) -> list:
        """Every lab container of this project, running or not."""
        return [
            c
            for c in docker.from_env().containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"})
            if c.labels.get("hubforge.user")
        ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = InvokedStack(tmp_path_factory.mktemp("stacks"))
    yield stack
    stack.invoke("down", "--volumes", "--user-volumes", "--yes")
    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={stack.project}"}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": f"{PROJECT_LABEL}={stack.project}"}):
        volume.remove(force=True)


@pytest.fixture(scope="module")
def first_up(stack):
    return stack.up()


@pytest.fixture(scope="module")
def admin(stack, first_up) -> HubSession:
    match = re.search(r"bootstrap secret \(shown once[^)]*\): (\S+)", first_up.stdout)
    assert match, f"the first `invoke up` printed no bootstrap secret:\n{first_up.stdout[-2000:]}"
    session = HubSession(stack.url)
    session.signup(ADMIN, PASSWORD, bootstrap_secret=match.group(1))
    assert session.login(ADMIN, PASSWORD).status_code == 302, "the printed bootstrap secret did not let the admin in"
    return session


def new_user(stack: InvokedStack, admin: HubSession) -> tuple[str, HubAPI]:
    name = f"u{secrets.token_hex(3)}"
    session = HubSession(stack.url)
    session.signup(name, PASSWORD)
    admin.approve(name)
    assert session.login(name, PASSWORD).status_code == 302
    return name, HubAPI(stack.url, session.new_token(name))


def server_stopped(api: HubAPI, name: str) -> bool:
    return not api.user(name)["servers"]


def test_first_up_waits_for_health_and_shows_the_secret_once(stack, first_up):
    assert "hubforge is up" in first_up.stdout and stack.url.rstrip("/") in first_up.stdout
    assert stack.hub().attrs["State"]["Health"]["Status"] == "healthy"  # `up` returned only once it was
    assert plain_get(stack.url + "hub/health").status_code == 200
    assert "admin bootstrap secret" in first_up.stdout
    assert (stack.run_dir / ".env").stat().st_mode & 0o077 == 0, ".env holds the metrics token: owner only"


def test_second_up_changes_nothing_and_hides_the_secret(stack, first_up):
    hub_before = stack.hub().id
    again = stack.up()
    assert stack.hub().id == hub_before, "an `invoke up` with nothing changed recreated the hub"
    assert "admin bootstrap secret" not in again.stdout
    assert "next: sign up as" in again.stdout  # the admin is still unclaimed: the next step is still said


def test_status_json_describes_the_stack(stack, first_up):
    result = stack.invoke("status", "--json")
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["running"] and state["project"] == stack.project
    assert [s["health"] for s in state["services"] if s["service"] == "hub"] == ["healthy"]
    assert state["admin_unclaimed"] is True
    assert "bootstrap_secret" not in state and "bootstrap_shown" not in state


def test_a_settings_change_recreates_the_hub_and_the_lab_keeps_its_kernel(stack, admin):
    name, api = new_user(stack, admin)
    api.start(name)
    lab = docker.from_env().containers.get(stack.lab_name(name))
    kernel = KernelClient(api, name)
    kernel.execute("answer = 41 + 1")
    hub_before = stack.hub().id

    with (stack.run_dir / ".env").open("a") as env:
        env.write("IDLE_CULLER_TIMEOUT=7200\n")  # any setting: the hub must be recreated to take it
    stack.up()

    assert stack.hub().id != hub_before, "the settings change did not reach the hub"
    assert docker.from_env().containers.get(lab.id).status == "running", "the lab was stopped with the hub"
    assert [c.id for c in stack.labs()] == [lab.id]
    assert api.user(name)["servers"][""]["ready"], "the new hub did not find the running lab"
    assert kernel.execute("print(answer)").strip() == "42", "the kernel lost its state"
    assert api.request("GET", f"user/{name}/api/status").status_code == 200  # the proxy routes to it again


def test_a_hub_crash_cuts_no_lab_connection(stack, admin):
    """Issue 32, part 1: the proxy outlives the hub. While the hub's process lies dead (SIGKILL from the host, as an
    out-of-memory kill would) an open kernel websocket keeps working and a file saved through the lab's API is saved;
    then Docker's restart policy brings the hub back, and it finds its routes again."""
    name, api = new_user(stack, admin)
    api.start(name)
    kernel = KernelClient(api, name)
    channel = kernel.channel()
    saved = f"user/{name}/api/contents/during-the-crash.txt"
    try:
        assert channel.execute("state = 6 * 7").strip() == ""
        hub = stack.hub()
        restarts = hub.attrs["RestartCount"]
        os.kill(hub.attrs["State"]["Pid"], signal.SIGKILL)
        wait_until(lambda: stack.hub().attrs["State"]["Pid"] != hub.attrs["State"]["Pid"], 10, "the hub to die")
        try:
            health = plain_get(f"{stack.url}hub/health").status_code
        except requests.RequestException as exc:  # nothing answers on the hub's port at all
            health = type(exc).__name__
        assert health != 200, "the hub answered while dead: the test proves nothing"

        assert channel.execute("print(state)").strip() == "42", "the open websocket lost its kernel"
        body = {"type": "file", "format": "text", "content": "written while the hub was down\n"}
        response = api.request("PUT", saved, json=body, timeout=10)
        assert response.status_code in (200, 201), f"the save failed while the hub was down: {response.status_code}"
        assert stack.hub().attrs["State"].get("Health", {}).get("Status") != "healthy", "the hub came back too soon"

        wait_until(
            lambda: stack.hub().attrs["State"].get("Health", {}).get("Status") == "healthy", 90, "the hub to be back"
        )
        assert stack.hub().attrs["RestartCount"] > restarts, "Docker did not restart the hub: it was not a crash"
        assert channel.execute("print(state + 1)").strip() == "43", "the websocket did not outlive the hub's return"
    finally:
        channel.close()
    assert api.user(name)["servers"][""]["ready"], "the hub that came back did not find the running lab"
    assert api.request("GET", saved).json()["content"] == "written while the hub was down\n"


def test_a_killed_lab_is_removed_and_starts_again_with_its_files(stack, admin):
    name, api = new_user(stack, admin)
    api.start(name)
    put = api.request(
        "PUT", f"user/{name}/api/contents/keep.txt", json={"type": "file", "format": "text", "content": "kept"}
    )
    assert put.status_code in (200, 201), put.text
    lab = docker.from_env().containers.get(stack.lab_name(name))
    lab.kill()

    wait_until(lambda: server_stopped(api, name), DEAD_LAB_DEADLINE, f"the hub to show {name}'s killed server stopped")
    wait_until(lambda: not [c for c in stack.labs() if c.id == lab.id], 10, "the dead container to be removed")

    api.start(name)
    got = api.request("GET", f"user/{name}/api/contents/keep.txt")
    assert got.status_code == 200 and got.json()["content"] == "kept"


def restart_docker_daemon(timeout: float = 90) -> None:
    """Stop the daemon as a host reboot or an upgrade would, and start it again with the same command line."""
    pidfile = Path("/var/run/docker.pid")
    if os.environ.get("DOCKER_HOST") or os.geteuid() != 0 or not pidfile.exists():
        pytest.skip("needs root and the local daemon's pidfile (/var/run/docker.pid) to restart Docker")
    if Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=timeout)
    else:
        pid = int(pidfile.read_text())
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout, "the Docker daemon to stop")
        with open("/var/log/dockerd.log", "ab") as log:
            subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    wait_until(lambda: docker.from_env(timeout=5).ping(), timeout, "the Docker daemon to answer again")


def test_after_a_daemon_restart_the_hub_is_back_every_server_stopped_and_no_dead_lab_left(stack, admin):
    users = [new_user(stack, admin) for _ in range(3)]
    for name, api in users:
        api.start(name)
    assert len([c for c in stack.labs() if c.status == "running"]) >= 3

    restart_docker_daemon()

    wait_until(lambda: stack.hub().attrs["State"]["Health"]["Status"] == "healthy", 120, "the hub to come back healthy")
    for name, api in users:
        wait_until(
            lambda api=api, name=name: server_stopped(api, name),
            DEAD_LAB_DEADLINE,
            f"the hub to show {name}'s server stopped",
        )
    wait_until(lambda: not stack.labs(), 30, "no lab container left behind")
    name, api = users[0]
    api.start(name)  # and the next start works
    assert api.request("GET", f"user/{name}/api/status").status_code == 200


def test_down_removes_hub_and_labs_and_keeps_the_volumes(stack, admin):
    volumes = {v.name for v in docker.from_env().volumes.list(filters={"label": f"{PROJECT_LABEL}={stack.project}"})}
    result = stack.invoke("down")
    assert result.returncode == 0, result.stderr
    assert not stack.labs()
    assert not docker.from_env().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={stack.project}"}
    )
    after = {v.name for v in docker.from_env().volumes.list(filters={"label": f"{PROJECT_LABEL}={stack.project}"})}
    assert volumes and volumes <= after
    status = json.loads(stack.invoke("status", "--json").stdout)
    assert status["running"] is False and status["labs"] == []
