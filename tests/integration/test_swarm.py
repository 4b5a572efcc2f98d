"""The swarm engine on a single-node swarm (this machine, made a manager for the module and left after):
spawn, persistence, restart, volume reset, broadcast, groups, isolation, status and down."""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import pytest

from hub_ext.naming import user_names

from ..support.helpers import wait_until
from ..support.hubclient import EventListener, HubSession, KernelClient
from ..support.livestack import PASSWORD, approved_user, current_images, run_invoke
from ..support.registry import NAMESPACE, loopback_registry, push_release

pytestmark = pytest.mark.integration
STACK_ENGINE = "swarm"
POOL = f"10.{random.randint(214, 250)}.{random.randint(0, 255)}.0/24"  # this module's labs, apart from other stacks'
STACK_ENV = {"LAB_SUBNET_POOL": POOL}
LISTENER = (
    "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 9999)); s.listen(4)\n"
    "for _ in range(20):\n    c, _ = s.accept(); c.sendall(b'walt-secret'); c.close()\n"
)
READER = (
    "import socket\ntry:\n    c = socket.create_connection(({host!r}, 9999), timeout=3); print(c.recv(64))\n"
    "except OSError as e:\n    print(type(e).__name__)\n"
)


@contextlib.contextmanager
def packets_to_the_pool_stay_here(pool: str):
    """Without the network guard (not on Swarm yet) a lab's packet to another network's address leaves through
    docker_gwbridge and the host's default route. Reject it on this host while the test probes, so nothing leaves."""
    rule = ["DOCKER-USER", "-i", "docker_gwbridge", "-d", pool, "-j", "REJECT"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)


@pytest.fixture(scope="module", autouse=True)
def swarm_member():
    """The module's stack makes this host a single-node swarm when it is in none; leave it again after."""
    client = docker.from_env()
    was_member = client.info()["Swarm"]["LocalNodeState"] == "active"
    yield
    if not was_member and client.info()["Swarm"]["LocalNodeState"] == "active":
        client.swarm.leave(force=True)


def service_of(live, name: str) -> dict:
    found = [
        s
        for s in live.stack.docker.services({"hubforge.project": live.project})
        if (s["Spec"].get("Labels") or {}).get("hubforge.user") == name
    ]
    assert len(found) == 1, f"{name} has {len(found)} lab services"
    return found[0]


def spawn_failure(api, user: str) -> str:
    """The message of a spawn that fails, as the spawn page shows it: the progress stream's last event."""
    response = api.request("POST", f"hub/api/users/{user}/server")
    assert response.status_code in (202, 500), response.text  # 500: failed within the API's wait; the stream says why
    with api.http.get(api.url(f"hub/api/users/{user}/server/progress"), stream=True, timeout=60) as events:
        last = ""
        for line in events.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                last = line
                if '"failed": true' in line or '"ready": true' in line:
                    break
    return last


def gone(find, seconds: float = 30) -> bool:
    """Whether `find` raises NotFound within `seconds`: Swarm stops a removed service's container after the call
    returns."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            find()
        except docker.errors.NotFound:
            return True
        time.sleep(0.25)
    return False


def put_file(api, user: str, path: str, content: str) -> None:
    response = api.request(
        "PUT", f"user/{user}/api/contents/{path}", json={"type": "file", "format": "text", "content": content}
    )
    assert response.status_code in (200, 201), response.text


def test_the_hub_is_a_service_on_the_manager(live):
    hub = live.hub()
    assert hub.labels["com.docker.stack.namespace"] == live.project
    service = live.stack.docker.client.api.inspect_service(f"{live.project}_hub")
    constraints = service["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
    assert constraints == [f"node.id == {live.stack.docker.swarm_node_id()}"]
    assert hub.attrs["HostConfig"]["ReadonlyRootfs"] is True and hub.attrs["HostConfig"]["CapDrop"] == ["ALL"]


def test_the_proxy_is_a_service_beside_the_hub_and_holds_the_ports(live):
    """Issue 32: the proxy outlives the hub on Swarm too, pinned where the hub is (the certs volume is there)."""
    api = live.stack.docker.client.api
    hub, proxy = (api.inspect_service(f"{live.project}_{name}")["Spec"] for name in ("hub", "proxy"))
    assert proxy["TaskTemplate"]["Placement"] == hub["TaskTemplate"]["Placement"]
    published = {p["PublishedPort"] for p in proxy["EndpointSpec"]["Ports"]}
    assert published == {live.stack.options.https_port, live.stack.options.http_port}
    assert not (hub.get("EndpointSpec") or {}).get("Ports")
    assert proxy["TaskTemplate"]["ContainerSpec"]["Image"].startswith("hubforge/proxy:")


def test_a_lab_is_a_service_with_the_runtime_of_the_compose_engine(live, admin):
    api = approved_user(live, admin, "first.last")[1]
    api.start("first.last")
    assert api.request("GET", "user/first.last/api/status").status_code == 200
    names = user_names(live.stack.options.volume_prefix, "first.last")
    service = service_of(live, "first.last")
    assert service["Spec"]["Name"] == names.container
    spec = service["Spec"]["TaskTemplate"]
    mounts = {m["Target"]: m for m in spec["ContainerSpec"]["Mounts"]}
    assert (
        mounts["/home/lab/workspace"]["Source"] == names.volumes["workspace"]
        and mounts["/home/lab/workspace"]["Type"] == "volume"
    )
    assert mounts["/tmp"]["Type"] == "tmpfs" and spec["ContainerSpec"]["ReadOnly"] is True
    assert spec["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert spec["Resources"]["Limits"]["Pids"] == 1024 and spec["Resources"]["Limits"]["MemoryBytes"] == 4 * 2**30
    assert service["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    lab = live.lab("first.last")
    assert lab.attrs["HostConfig"]["ReadonlyRootfs"] is True
    volume = live.stack.docker.client.volumes.get(names.volumes["workspace"])
    assert volume.attrs["Labels"]["hubforge.user"] == "first.last"  # made at the mount, labelled for `down` and reset


def test_workspace_survives_stop_and_start_on_the_recorded_node(live, admin):
    api = approved_user(live, admin, "dave")[1]
    api.start("dave")
    put_file(api, "dave", "keep.txt", "kept")
    api.stop("dave")
    assert gone(lambda: live.lab("dave")), "the lab's container is still there 30 s after its service was removed"
    assert not [
        s
        for s in live.stack.docker.services({"hubforge.project": live.project})
        if (s["Spec"].get("Labels") or {}).get("hubforge.user") == "dave"
    ]
    api.start("dave")
    constraints = service_of(live, "dave")["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
    assert constraints == [f"node.id == {live.stack.docker.swarm_node_id()}"]  # pinned to the node with the volumes
    assert api.request("GET", "user/dave/api/contents/keep.txt").json()["content"] == "kept"


def test_restart_keeps_the_files_and_gives_a_new_kernel(live, admin):
    session, api = approved_user(live, admin, "olive")
    api.start("olive")
    put_file(api, "olive", "a.txt", "A")
    kernel = api.request("POST", "user/olive/api/kernels", json={"name": "python3"}).json()["id"]
    before = live.lab("olive").id
    response = session.api("POST", "hubforge/users/olive/restart")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "restarted"
    assert live.lab("olive").id != before  # Swarm replaced the task: a new container, same service and volumes
    assert api.request("GET", "user/olive/api/contents/a.txt").json()["content"] == "A"
    assert kernel not in {k["id"] for k in api.request("GET", "user/olive/api/kernels").json()}


def test_volume_reset_removes_the_chosen_volume(live, admin):
    session, api = approved_user(live, admin, "rita")
    api.start("rita")
    put_file(api, "rita", "gone.txt", "x")
    api.stop("rita")
    names = user_names(live.stack.options.volume_prefix, "rita")
    response = session.api("POST", "hubforge/users/rita/volumes/reset", json={"volumes": ["workspace"]})
    assert response.status_code == 200, response.text
    assert response.json()["results"]["workspace"]["result"] == "removed"
    existing = {v.name for v in live.stack.docker.client.volumes.list(filters={"label": "hubforge.user=rita"})}
    assert names.volumes["workspace"] not in existing and names.volumes["home"] in existing
    api.start("rita")
    assert api.request("GET", "user/rita/api/contents/gone.txt").status_code == 404


def test_broadcast_reaches_the_labs(live, admin):
    users = {name: approved_user(live, admin, name)[1] for name in ("viv", "walt")}
    for name, api in users.items():
        api.start(name)
    listeners = {name: EventListener(api, name) for name, api in users.items()}
    try:
        time.sleep(0.5)
        response = admin.api("POST", "hubforge/broadcast", json={"message": "swarm maintenance", "type": "info"})
        assert response.status_code == 200, response.text
        assert {r["user"]: r["result"] for r in response.json()["results"]}.items() >= {
            "viv": "delivered",
            "walt": "delivered",
        }.items()
        for listener in listeners.values():
            assert listener.wait_for("swarm maintenance", timeout=5) is not None
    finally:
        for listener in listeners.values():
            listener.close()


def test_labs_cannot_reach_each_other(live, admin):
    """Each lab on its own overlay network with the hub: another lab's service name does not resolve, and a
    connection to its address never reaches it (walt's listener hands out a secret that viv must not read)."""
    viv, walt = live.lab("viv"), live.lab("walt")
    walt_address = next(iter(walt.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    walt_service = service_of(live, "walt")["Spec"]["Name"]
    walt.exec_run(["python3", "-c", LISTENER], user="lab", detach=True)
    time.sleep(1)
    assert (
        "walt-secret" in walt.exec_run(["python3", "-c", READER.format(host="127.0.0.1")], user="lab").output.decode()
    )
    with packets_to_the_pool_stay_here(POOL):
        by_name = viv.exec_run(["python3", "-c", READER.format(host=walt_service)], user="lab").output.decode()
        by_address = viv.exec_run(["python3", "-c", READER.format(host=walt_address)], user="lab").output.decode()
    assert "walt-secret" not in by_name and "gaierror" in by_name
    assert "walt-secret" not in by_address
    hub = (
        viv.exec_run(
            [
                "python3",
                "-c",
                "import os,urllib.request;print(urllib.request.urlopen("
                "os.environ['JUPYTERHUB_API_URL'],timeout=5).status)",
            ],
            user="lab",
        )
        .output.decode()
        .strip()
    )
    assert hub == "200"  # the hub, on viv's own network, answers


def test_docker_sock_is_granted_and_docker_privileged_is_refused_in_one_line(live, admin, admin_api):
    api = approved_user(live, admin, "gina")[1]
    assert admin_api.request("POST", "hub/api/groups/docker-sock/users", json={"users": ["gina"]}).status_code == 200
    api.start("gina")
    assert "/var/run/docker.sock" in {m["Destination"] for m in live.lab("gina").attrs["Mounts"]}
    api.stop("gina")
    assert (
        admin_api.request("POST", "hub/api/groups/docker-privileged/users", json={"users": ["gina"]}).status_code == 200
    )
    assert "docker-privileged group cannot work on the swarm engine" in spawn_failure(api, "gina")
    assert not [
        s
        for s in live.stack.docker.services({"hubforge.project": live.project})
        if (s["Spec"].get("Labels") or {}).get("hubforge.user") == "gina"
    ]
    assert (
        admin_api.request("DELETE", "hub/api/groups/docker-privileged/users", json={"users": ["gina"]}).status_code
        == 200
    )


def test_a_group_policy_gives_members_its_memory_and_folder_and_refuses_a_quota_in_one_line(live, admin, admin_api):
    """Group policies on Swarm: service resources from the policy, the group's folder made and owned on the lab's
    node by a one-shot helper there, and storage quotas refused in one line (not on this engine yet)."""
    api = approved_user(live, admin, "hana")[1]
    policy = {"mem_limit": "640M", "folder": "rw", "environment": {"TEAM": "swarm"}}
    assert admin_api.request("PUT", "hub/api/hubforge/policies/crew", json=policy).status_code == 201
    assert admin_api.request("POST", "hub/api/groups/crew/users", json={"users": ["hana"]}).status_code == 200
    api.start("hana")
    service = next(
        s
        for s in live.stack.docker.services({"hubforge.project": live.project})
        if (s["Spec"].get("Labels") or {}).get("hubforge.user") == "hana"
    )
    assert service["Spec"]["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == 640 * 2**20
    result = live.lab("hana").exec_run(
        ["sh", "-c", "echo ok > /mnt/groups/crew/x && cat /mnt/groups/crew/x; echo $TEAM"], user="lab"
    )
    assert result.output.decode().split() == ["ok", "swarm"], result.output
    api.stop("hana")
    assert admin_api.request("PUT", "hub/api/hubforge/policies/crew", json={"home_quota": "1G"}).status_code == 200
    assert "storage quotas are not available on the swarm engine yet" in spawn_failure(api, "hana")
    assert admin_api.request("PUT", "hub/api/hubforge/policies/crew", json=None).status_code == 200


def test_status_lists_the_nodes_and_where_each_lab_runs(live):
    state = live.stack.status()
    assert state["engine"] == "swarm" and state["running"]
    assert [node["role"] for node in state["nodes"]] == ["manager"] and state["nodes"][0]["state"] == "ready"
    here = state["nodes"][0]["hostname"]
    assert state["lab_placement"]["dave"]["node"] == here and state["lab_placement"]["dave"]["state"] == "running"
    assert any(s["service"] == "hub" and s["node"] == here and s["health"] == "healthy" for s in state["services"])


PLANTED = "/planted-by-the-test"  # a file the built images do not hold
PROBE = (
    "import socket, sys\nfor host in sys.argv[2:]:\n    try:\n"
    "        socket.create_connection((host, int(sys.argv[1])), timeout=3).close(); print(host, 'connected')\n"
    "    except OSError as e:\n        print(host, type(e).__name__)\n"
)


def registry_auth(live) -> dict | None:
    """The registry's credentials from the run folder, as the Docker SDK takes them (None: a registry without any)."""
    found = live.stack.options.run_dir / "registry-auth" / "auth.json"
    if not found.exists():
        return None
    auth = json.loads(found.read_text())
    return {"username": auth["username"], "password": auth["password"]}


def push(client, repository: str, tag: str, auth: dict | None) -> str:
    """docker push; the registry's error, or "" when it took the image."""
    for chunk in client.api.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in chunk:
            return chunk["error"]
    return ""


def planted(client, built: str, repository: str, tag: str) -> str:
    """`built` with one file added, committed as repository:tag: what someone who reaches the registry would push."""
    container = client.containers.create(built)
    try:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.addfile(tarfile.TarInfo(PLANTED.lstrip("/")), io.BytesIO(b""))
        container.put_archive("/", archive.getvalue())
        return container.commit(repository=repository, tag=tag).id
    finally:
        container.remove(force=True)


def runs_built_bytes(container, built_id: str) -> None:
    assert container.image.id == built_id, (
        f"{container.name} runs {container.image.id[:19]}, not the built {built_id[:19]}"
    )
    assert container.exec_run(["test", "-e", PLANTED]).exit_code != 0, f"{container.name} holds {PLANTED}"


def test_an_unauthenticated_push_is_refused(live):
    registry = live.stack.registry
    request = urllib.request.Request(f"http://{registry}/v2/hubforge/planted/blobs/uploads/", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 401, f"the registry answered {status} to an upload without credentials"
    client = docker.from_env()
    client.images.get(current_images()[0]["gpu-probe"]).tag(f"{registry}/hubforge/planted", "anonymous")
    try:
        assert "no basic auth credentials" in push(client, f"{registry}/hubforge/planted", "anonymous", None)
    finally:
        client.images.remove(f"{registry}/hubforge/planted:anonymous")


def test_a_pushed_image_under_the_key_does_not_replace_what_the_swarm_runs(live, admin):
    """Push a hub and a lab with one file added under their key tags (with the stack's own credentials: even someone
    who holds them), then `up` again: the guard on every node, the hub and a new lab still run the built bytes."""
    client, registry = docker.from_env(), live.stack.registry
    images, lab_images = current_images()
    built = {name: client.images.get(images[name]).id for name in ("hub", "lab")}
    swapped = []
    try:
        for name in ("hub", "lab"):
            repository, key = images[name].rsplit(":", 1)
            swapped.append(planted(client, images[name], f"{registry}/{repository}", key))
            assert push(client, f"{registry}/{repository}", key, registry_auth(live)) == ""
        live.stack.up(images, lab_images, lambda message: None)
        guard = client.services.get(live.stack.guard_service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]

        def guard_container():
            found = client.containers.list(
                filters={"label": f"com.docker.swarm.service.name={live.stack.guard_service}"}
            )
            return next((c for c in found if c.attrs["Config"]["Image"] == guard), None)

        runs_built_bytes(wait_until(guard_container, 60, "the network guard's task of the pinned image"), built["hub"])
        runs_built_bytes(live.hub(), built["hub"])
        api = approved_user(live, admin, "nadia")[1]
        api.start("nadia")
        runs_built_bytes(live.lab("nadia"), built["lab"])
    finally:
        for image in swapped:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image, force=True)


def test_a_lab_cannot_open_a_connection_to_the_registry(live, admin):
    """From a running lab: the registry's port on every address of this node, and the lab's own gateway."""
    api = approved_user(live, admin, "lara")[1]
    api.start("lara")
    lab = live.lab("lara")
    node = live.stack.docker.client.api.inspect_node(live.stack.docker.swarm_node_id())
    addresses = {node["Status"]["Addr"], "127.0.0.1"}
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    addresses |= {line.split()[3].split("/")[0] for line in out.splitlines()}
    gateway = lab.exec_run(["python3", "-c", "print(open('/proc/net/route').read())"]).output.decode()
    for line in gateway.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":  # the default route: its gateway, little-endian hex
            addresses.add(".".join(str(int(fields[2][i : i + 2], 16)) for i in (6, 4, 2, 0)))
    started = time.monotonic()
    port = str(live.stack.options.registry_port)
    answers = lab.exec_run(["python3", "-c", PROBE, port, *sorted(addresses)], user="lab").output.decode()
    assert time.monotonic() - started < 3.5 * len(addresses) + 5
    assert len(answers.splitlines()) == len(addresses), answers
    assert "connected" not in answers, answers


def test_an_upgrade_keeps_the_labs_and_a_broken_release_rolls_back_by_itself(live, admin, tmp_path_factory):
    """`invoke upgrade` on Swarm (issue 30): the hub's service moves to a release pulled by digest while a lab service
    and its kernel run on; a release whose hub cannot start fails the gate and the stack comes back by itself."""
    repository = Path("/var/lib/hubforge/backups") / live.project  # BACKUP_REPOSITORY's default: the upgrade's backup
    try:
        with loopback_registry(tmp_path_factory.mktemp("registry")) as registry:
            good = push_release(registry, "0.9.0", 'LABEL org.opencontainers.image.version="0.9.0"')
            push_release(registry, "0.9.1", 'CMD ["jupyterhub", "--no-such-option=1"]')
            session, api = approved_user(live, admin, "uma")
            api.start("uma")
            note = "still runs the previous lab image"
            home = session.url("hub/home")
            assert note not in session.http.get(home, timeout=30).text  # the registry's copy of the stack's lab image
            kernel = KernelClient(api, "uma")
            kernel.execute("answer = 6 * 7")
            lab = service_of(live, "uma")["ID"]
            release = ["--registry", registry, "--namespace", NAMESPACE]
            done = run_invoke(live, "upgrade", "--to", "0.9.0", *release, timeout=900)
            assert done.returncode == 0, done.stdout + done.stderr
            pinned = f"{registry}/{NAMESPACE}/hub@{good['hub']}"
            assert live.stack.hub_container()["Image"] == pinned
            assert service_of(live, "uma")["ID"] == lab
            assert kernel.execute("print(answer)").strip() == "42"
            assert note in session.http.get(home, timeout=30).text  # her lab runs the image of before the upgrade
            failed = run_invoke(live, "upgrade", "--to", "0.9.1", *release, timeout=900)
            assert failed.returncode == 1 and "rolled back to 0.9.0" in failed.stderr, failed.stdout + failed.stderr
            assert live.stack.hub_container()["Image"] == pinned
            assert service_of(live, "uma")["ID"] == lab
            assert kernel.execute("print(answer)").strip() == "42"
            assert HubSession(live.url).login("uma", PASSWORD).status_code == 302  # the database came back intact
    finally:
        shutil.rmtree(repository, ignore_errors=True)


def test_down_removes_the_stack_and_every_lab_service_and_keeps_volumes(live):
    volumes_before = {v["Name"] for v in live.stack.docker.volumes({"hubforge.project": live.project})}
    live.stack.down(volumes=False, user_volumes=False)
    assert live.stack.docker.services({"hubforge.project": live.project}) == []
    assert live.stack.docker.services({"com.docker.stack.namespace": live.project}) == []
    assert live.containers() == []
    volumes_after = {v["Name"] for v in live.stack.docker.volumes({"hubforge.project": live.project})}
    assert volumes_before and volumes_after == volumes_before
