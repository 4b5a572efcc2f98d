"""The swarm engine as data: the rendered stack file, and the lab's runtime translated into a service spec."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import types
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml

from hub_ext.labs.networks import hub_address, overlay_spec
from hub_ext.labs.policy import Policy, builtin_policy, merge
from hub_ext.labs.runtime import lab_runtime
from hub_ext.naming import DOCKER_PRIVILEGED_GROUP, DOCKER_SOCK_GROUP, user_names
from hub_ext.settings.hub import ConfigError, from_environ
from hub_ext.spawn.swarm import (
    GPU_RESOURCE,
    HubforgeSwarmSpawner,
    SwarmRefused,
    container_spec_options,
    service_mounts,
    service_resources,
)
from hubforge.deploy import StackOptions
from hubforge.deploy.swarm import SwarmStack, node_summary, running_task
from hubforge.errors import HubforgeError

ROOT = Path(__file__).resolve().parents[2]


class ManagerDaemon:
    """The Docker calls SwarmStack.prepare makes, on a swarm manager with one CPU and no stack deployed yet."""

    def __init__(self, state="active", manager=True):
        self.state, self.manager, self.inits = state, manager, []

    def swarm_state(self):
        return {"LocalNodeState": self.state, "ControlAvailable": self.manager, "NodeID": "node1"}

    def swarm_init(self, address):
        self.inits.append(address)
        self.state = "active"

    def swarm_node_id(self):
        return "node1"

    def services(self, labels):
        return []

    def containers(self, labels, all=True):
        return []

    def cpu_count(self):
        return 1


def swarm_stack(tmp_path, daemon, bind="0.0.0.0", env="ENABLE_GPU_SUPPORT=0\n"):
    socket_file = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_file))
    with socket.socket() as probe:  # a port nothing listens on, for the registry
        probe.bind(("127.0.0.1", 0))
        registry_port = probe.getsockname()[1]
    options = StackOptions(
        project="p",
        run_dir=tmp_path / "run",
        https_port=9443,
        http_port=9080,
        bind=bind,
        docker_socket=str(socket_file),
        engine="swarm",
        registry_port=registry_port,
        routing_mesh="off",
    )
    options.run_dir.mkdir()
    (options.run_dir / ".env").write_text(env)
    return SwarmStack(options, daemon, ROOT, say=lambda message: None), listener


def test_the_stack_file_carries_what_swarm_needs_from_the_same_template(tmp_path):
    stack, listener = swarm_stack(tmp_path, ManagerDaemon())
    state = stack.prepare({"hub": "h:1", "gpu-probe": "g:1", "registry": "r:1"}, {"default": "l:1"})
    rendered = yaml.safe_load((stack.options.run_dir / "stack.yml").read_text())
    listener.close()
    assert "name" not in rendered and rendered["version"] == "3.9"  # `docker stack deploy` takes format 3
    hub = rendered["services"]["hub"]
    assert set(rendered["services"]) == {"hub", "proxy", "registry"}  # the guard: a global service of the registry's
    registry = rendered["services"]["registry"]
    assert registry["image"] == "r:1" and registry["deploy"]["placement"]["constraints"] == ["node.id == node1"]
    assert registry["ports"] == [
        {"target": 5000, "published": stack.options.registry_port, "protocol": "tcp", "mode": "host"}
    ]
    assert registry["deploy"]["endpoint_mode"] == "dnsrr"  # no mesh: no virtual IP either
    assert (
        json.loads((stack.options.run_dir / "registry" / "images.json").read_text()) == {}
    )  # the hub's bind has a source
    assert {
        "type": "bind",
        "source": str(stack.options.run_dir / "registry"),
        "target": "/srv/jupyterhub/registry",
        "read_only": True,
    } in hub["volumes"]
    assert hub["deploy"]["placement"]["constraints"] == ["node.id == node1"]
    assert hub["deploy"]["resources"]["limits"] == {"memory": "2G", "cpus": "1.0", "pids": 2048}
    assert hub["deploy"]["endpoint_mode"] == "dnsrr"
    proxy = rendered["services"]["proxy"]  # the ports are the proxy's, pinned beside the hub
    assert "ports" not in hub and proxy["deploy"]["placement"] == hub["deploy"]["placement"]
    assert [p["mode"] for p in proxy["ports"]] == ["host", "host"] and {p["published"] for p in proxy["ports"]} == {
        9443,
        9080,
    }
    assert proxy["deploy"]["endpoint_mode"] == "dnsrr" and proxy["env_file"] == ["proxy.env"]
    assert hub["environment"]["HUBFORGE_PROXY_API"] == "http://proxy:8001" and "proxy.env" in hub["env_file"]
    assert hub["environment"]["HUBFORGE_ENGINE"] == "swarm"
    assert hub["user"].startswith("1000:") and "group_add" not in hub and "mem_limit" not in hub
    assert rendered["networks"]["hub"]["driver"] == "overlay" and rendered["networks"]["hub"]["attachable"] is True
    assert {v["target"] for v in hub["volumes"] if isinstance(v, dict)} >= {"/var/run/docker.sock", "/tmp"}
    assert state["engine"] == "swarm" and state["network_guard"] is True  # a global service, made after the push


def test_the_registry_asks_for_credentials_made_at_the_first_up_and_kept_private(tmp_path):
    import bcrypt

    stack, listener = swarm_stack(tmp_path, ManagerDaemon())
    stack.prepare({"hub": "h:1", "gpu-probe": "g:1", "registry": "r:1"}, {"default": "l:1"})
    first = (stack.options.run_dir / "registry-auth" / "auth.json").read_text()
    stack.prepare({"hub": "h:1", "gpu-probe": "g:1", "registry": "r:1"}, {"default": "l:1"})
    listener.close()
    folder = stack.options.run_dir / "registry-auth"
    assert (folder / "auth.json").read_text() == first  # kept: nodes and the hub hold it
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {f.name: f.stat().st_mode & 0o777 for f in folder.iterdir()} == {"auth.json": 0o600, "htpasswd": 0o600}
    auth = json.loads(first)
    assert len(auth["password"]) >= 40
    user, hashed = (folder / "htpasswd").read_text().strip().split(":", 1)
    assert user == auth["username"] and bcrypt.checkpw(auth["password"].encode(), hashed.encode())
    rendered = yaml.safe_load((stack.options.run_dir / "stack.yml").read_text())
    registry, hub = rendered["services"]["registry"], rendered["services"]["hub"]
    assert registry["environment"] == {
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": "hubforge",
        "REGISTRY_AUTH_HTPASSWD_PATH": "/run/secrets/registry_htpasswd",
    }
    assert registry["secrets"] == [
        {"source": "registry_htpasswd", "target": "registry_htpasswd", "uid": "65532", "gid": "65532", "mode": 0o400}
    ]
    assert hub["secrets"] == [
        {"source": "registry_auth", "target": "registry_auth", "uid": "1000", "gid": "1000", "mode": 0o400}
    ]
    secrets = rendered["secrets"]
    assert secrets["registry_auth"]["file"] == str(folder / "auth.json")
    assert secrets["registry_htpasswd"]["file"] == str(folder / "htpasswd")
    assert secrets["registry_auth"]["name"].startswith("p_registry_auth_")
    assert secrets["registry_htpasswd"]["name"].startswith("p_registry_htpasswd_")


def manifest(config: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "config": {"digest": config}, "layers": []}).encode()


@pytest.mark.parametrize(
    ("body", "digest", "image_id", "expected"),
    [
        (manifest("sha256:built"), None, "sha256:built", True),  # the image built here, by its own digest
        (manifest("sha256:other"), None, "sha256:built", False),  # a pushed image under the key: another config
        (
            manifest("sha256:built"),
            "sha256:" + "0" * 64,
            "sha256:built",
            False,
        ),  # bytes that are not what the digest names
        (None, "sha256:" + "0" * 64, "sha256:built", False),  # the registry has no such manifest
        (b"not json", None, "sha256:built", False),
        (manifest("sha256:cfg"), "self", "self", True),  # containerd's image store: the id is the manifest's digest
    ],
)
def test_only_a_manifest_of_the_built_image_is_pinned(body, digest, image_id, expected):
    from hubforge.deploy.swarm import built_here

    real = "sha256:" + hashlib.sha256(body or b"").hexdigest()
    digest = real if digest in (None, "self") else digest
    assert built_here(body, digest, real if image_id == "self" else image_id) is expected


def test_compose_renders_as_before_from_the_same_template(tmp_path):
    from hubforge.deploy import ComposeStack

    stack, listener = swarm_stack(tmp_path, ManagerDaemon())
    compose = ComposeStack(
        dataclasses.replace(stack.options, engine="compose"), ManagerDaemon(), ROOT, say=lambda message: None
    )
    compose.prepare({"hub": "h:1", "gpu-probe": "g:1"}, {"default": "l:1"})
    listener.close()
    rendered = yaml.safe_load((stack.options.run_dir / "compose.yml").read_text())
    assert rendered["name"] == "p" and set(rendered["services"]) == {"hub", "proxy", "netguard"}
    assert "deploy" not in rendered["services"]["hub"] and rendered["services"]["hub"]["restart"] == "unless-stopped"


def test_a_fresh_host_becomes_a_single_node_swarm_and_a_worker_is_refused(tmp_path):
    daemon = ManagerDaemon(state="inactive")
    stack, listener = swarm_stack(tmp_path, daemon)
    stack.prepare({"hub": "h:1", "gpu-probe": "g:1"}, {"default": "l:1"})
    assert len(daemon.inits) == 1
    worker, _ = (
        swarm_stack(tmp_path / "w", ManagerDaemon(manager=False)) if (tmp_path / "w").mkdir() is None else (None, None)
    )
    with pytest.raises(HubforgeError, match="swarm worker: run `invoke up --engine swarm` on a manager"):
        worker.prepare({"hub": "h:1", "gpu-probe": "g:1"}, {"default": "l:1"})
    listener.close()


def test_a_bind_address_swarm_cannot_honour_is_refused_in_one_line(tmp_path):
    stack, listener = swarm_stack(tmp_path, ManagerDaemon(), bind="127.0.0.1")
    with pytest.raises(HubforgeError) as refused:
        stack.prepare({"hub": "h:1", "gpu-probe": "g:1"}, {"default": "l:1"})
    listener.close()
    assert "--bind 127.0.0.1 cannot be honoured on the swarm engine" in str(refused.value) and "\n" not in str(
        refused.value
    )
    assert not (stack.options.run_dir / "stack.yml").exists()


def runtime(groups=()):
    return lab_runtime(
        names=user_names("jl", "ann"),
        policy=merge(Policy(pids_limit=512), {group: builtin_policy(group) for group in groups}).policy,
        shared_volume="p_shared",
        docker_socket_gid=998,
        disable_ipv6=True,
    )


def test_the_runtime_becomes_a_container_spec():
    options = container_spec_options(runtime([DOCKER_SOCK_GROUP]).host_config, {"hubforge.user": "ann"})
    assert options["cap_drop"] == ["ALL"] and options["read_only"] is True and options["groups"] == ["998"]
    assert options["sysctls"] == {"net.ipv6.conf.all.disable_ipv6": "1"} and options["labels"] == {
        "hubforge.user": "ann"
    }


def test_docker_privileged_is_refused_with_one_line():
    with pytest.raises(SwarmRefused) as refused:
        container_spec_options(runtime([DOCKER_PRIVILEGED_GROUP]).host_config, {})
    assert f"the {DOCKER_PRIVILEGED_GROUP} group cannot work on the swarm engine" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_mounts_are_labelled_volumes_binds_for_paths_and_a_tmpfs():
    lab = runtime([DOCKER_SOCK_GROUP])
    names = user_names("jl", "ann")
    labels = {names.volumes["workspace"]: {"hubforge.user": "ann", "hubforge.volume": "workspace"}}
    mounts = {m["Target"]: m for m in service_mounts(lab.volumes, lab.host_config["tmpfs"], labels, None)}
    workspace = mounts["/home/lab/workspace"]
    assert workspace["Type"] == "volume" and workspace["Source"] == names.volumes["workspace"]
    assert workspace["VolumeOptions"]["Labels"] == labels[names.volumes["workspace"]]
    assert mounts["/var/run/docker.sock"]["Type"] == "bind" and mounts["/mnt/shared"]["Type"] == "volume"
    assert mounts["/tmp"]["Type"] == "tmpfs" and mounts["/tmp"]["TmpfsOptions"]["Mode"] == 0o1777


def test_shared_storage_gives_every_volume_the_driver():
    from docker.types import DriverConfig

    lab = runtime()
    driver = DriverConfig("local", {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/export"})
    volumes = [m for m in service_mounts(lab.volumes, {}, {}, driver) if m["Type"] == "volume"]
    assert volumes and all(m["VolumeOptions"]["DriverConfig"]["Name"] == "local" for m in volumes)


def test_resources_carry_pids_and_gpus_as_the_nodes_generic_resource():
    plain = service_resources(2**30, 2.0, 512, 0)
    assert (
        plain["Limits"] == {"MemoryBytes": 2**30, "NanoCPUs": 2_000_000_000, "Pids": 512}
        and "Reservations" not in plain
    )
    gpu = service_resources(None, None, 512, 1)
    assert gpu["Reservations"]["GenericResources"] == [{"DiscreteResourceSpec": {"Kind": GPU_RESOURCE, "Value": 1}}]


def test_the_hub_has_a_fixed_address_outside_swarms_range_on_each_lab_overlay():
    subnet = ip_network("10.213.0.16/28")
    spec = overlay_spec(subnet)
    assert spec == {"subnet": "10.213.0.16/28", "gateway": "10.213.0.17", "iprange": "10.213.0.16/29"}
    assert ip_address(hub_address(subnet)) in subnet and ip_address(hub_address(subnet)) not in ip_network(
        spec["iprange"]
    )


def test_the_node_pin_outlives_a_stop():
    spawner = HubforgeSwarmSpawner(
        name_template="jl-ann", user=types.SimpleNamespace(name="ann", id=1, escaped_name="ann", url="/user/ann/")
    )
    spawner.load_state({"object_id": "svc", "node_id": "node7"})
    spawner.clear_state()
    assert spawner.get_state().get("node_id") == "node7"


def test_volume_driver_settings():
    hub = from_environ(
        {"LAB_VOLUME_DRIVER": "local", "LAB_VOLUME_DRIVER_OPTS": "type=nfs;o=addr=10.0.0.5,rw,nfsvers=4;device=:/x"}
    )
    assert hub.lab_volume_driver == "local" and hub.lab_volume_driver_opts == {
        "type": "nfs",
        "o": "addr=10.0.0.5,rw,nfsvers=4",
        "device": ":/x",
    }
    with pytest.raises(ConfigError, match="LAB_VOLUME_DRIVER_OPTS is set but LAB_VOLUME_DRIVER is empty"):
        from_environ({"LAB_VOLUME_DRIVER_OPTS": "type=nfs"})
    with pytest.raises(ConfigError, match="is not key=value"):
        from_environ({"LAB_VOLUME_DRIVER": "local", "LAB_VOLUME_DRIVER_OPTS": "nfs"})
    with pytest.raises(ConfigError, match="is not a volume driver name"):
        from_environ({"LAB_VOLUME_DRIVER": "Bad Driver!"})


def test_status_helpers_read_nodes_and_tasks():
    node = {
        "ID": "n1",
        "Spec": {"Role": "worker", "Availability": "active", "Labels": {}},
        "Description": {
            "Hostname": "gpu1",
            "Resources": {"GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]},
        },
        "Status": {"State": "ready", "Addr": "10.0.0.7"},
    }
    assert node_summary(node) == {
        "id": "n1",
        "hostname": "gpu1",
        "role": "worker",
        "availability": "active",
        "state": "ready",
        "address": "10.0.0.7",
        "gpus": 2,
        "labels": {},
    }
    tasks = [
        {"ID": "old", "DesiredState": "shutdown", "UpdatedAt": "2"},
        {"ID": "new", "DesiredState": "running", "UpdatedAt": "1"},
    ]
    assert running_task(tasks)["ID"] == "new" and running_task([]) is None


def swarm_node(node_id: str, state: str = "ready", availability: str = "active", gpus: int = 0) -> dict:
    resources = {"GenericResources": [{"DiscreteResourceSpec": {"Kind": GPU_RESOURCE, "Value": gpus}}]} if gpus else {}
    return {
        "ID": node_id,
        "Status": {"State": state},
        "Spec": {"Availability": availability},
        "Description": {"Resources": resources},
    }


def test_a_first_start_goes_to_the_ready_node_with_the_fewest_tasks():
    from hub_ext.spawn.swarm import least_loaded

    nodes = [
        swarm_node("manager"),
        swarm_node("w1"),
        swarm_node("w2"),
        swarm_node("w3", state="down"),
        swarm_node("w4", availability="drain"),
    ]
    running = [{"NodeID": "manager"}, {"NodeID": "manager"}, {"NodeID": "w1"}]  # the hub and the registry; one lab
    assert least_loaded(nodes, running) == "w2"
    assert least_loaded(nodes, running + [{"NodeID": "w2"}]) == "w1"  # a tie: the lowest id, every time
    assert least_loaded(nodes + [swarm_node("g1", gpus=2)], running, gpus=1) == "g1"  # GPU labs only where GPUs are
    with pytest.raises(SwarmRefused, match="no node of the swarm is ready and active with 1 NVIDIA-GPU"):
        least_loaded(nodes, running, gpus=1)


def test_labs_run_from_the_registry_by_digest_once_pushed(tmp_path):
    spawner = HubforgeSwarmSpawner(image_map=str(tmp_path / "images.json"))
    assert spawner.registry_ref("hubforge/lab:k1") is None  # before `invoke up` pushed: the hub's node only
    (tmp_path / "images.json").write_text('{"hubforge/lab:k1": "127.0.0.1:5000/hubforge/lab@sha256:ab"}')
    assert spawner.registry_ref("hubforge/lab:k1") == "127.0.0.1:5000/hubforge/lab@sha256:ab"
    assert spawner.registry_ref("hubforge/lab:k2") is None
    (tmp_path / "images.json").write_text("[not json")
    assert spawner.registry_ref("hubforge/lab:k1") is None


def test_the_volume_helpers_answer_is_read_back_from_its_logs():
    from hub_ext.helpers.volumes import RESULT_PREFIX, parse_answer

    logs = f'starting\n{RESULT_PREFIX}[{{"volume": "v", "result": "removed"}}]\n'
    assert parse_answer(logs) == [{"volume": "v", "result": "removed"}]
    assert parse_answer("Traceback (most recent call last):\n  ...\n") is None  # died before answering
    assert parse_answer(f"{RESULT_PREFIX}{{truncated") is None


def test_volume_sizes_name_only_this_projects_volumes_that_exist_with_their_measured_size():
    """One rule for the hub's node and the helper on another node: which of the user's volumes exist, and their
    sizes."""
    from hub_ext.helpers.volumes import measure
    from hub_ext.naming import PROJECT_LABEL

    found = [
        {"Name": "lab-alice_home", "Labels": {PROJECT_LABEL: "p"}},
        {"Name": "lab-alice_workspace", "Labels": {PROJECT_LABEL: "p"}},
        {"Name": "lab-alice_cache", "Labels": {PROJECT_LABEL: "other"}},  # another project's, same name
        {"Name": "unrelated", "Labels": {}},
    ]
    usage = {
        "Volumes": [
            {"Name": "lab-alice_home", "UsageData": {"Size": 4096}},
            {"Name": "lab-alice_cache", "UsageData": {"Size": 9}},
            {"Name": "lab-alice_workspace", "UsageData": {"Size": -1}},
        ]
    }  # -1: Docker has not measured it
    wanted = ["lab-alice_home", "lab-alice_workspace", "lab-alice_cache"]
    assert measure(found, usage, wanted, "p") == {"lab-alice_home": 4096, "lab-alice_workspace": None}
    assert measure(found, {}, wanted, "p") == {"lab-alice_home": None, "lab-alice_workspace": None}


def test_the_guard_closes_the_registrys_port_to_labs_at_every_address():
    """Docker's proxy answers a lab at the node's public address through INPUT, where no private range matches: the
    registry's port is refused there by port, and a DNAT-ed connection to it in FORWARD, before anything returns."""
    from hub_ext.helpers.netguard import parse_args, rules_for
    from hubforge.deploy.swarm import guard_command

    hub = from_environ({})
    command = guard_command("p", hub, "docker_gwbridge", 443, 80, registry_port=5000)
    assert command[command.index("--closed") + 1] == "5000"
    assert "5000:8443" not in command and not any(a.startswith("5000:") for a in command)  # never published through
    rules = rules_for(parse_args(command[3:]), resolvers=("192.0.2.53",))
    refused = ("-p", "tcp", "--dport", "5000", "-j", "REJECT", "--reject-with", "tcp-reset")
    assert rules.local[1] == refused  # after replies only: the registry's own answers still flow
    assert rules.forward[1] == (
        "-p",
        "tcp",
        "-m",
        "conntrack",
        "--ctstate",
        "DNAT",
        "--ctorigdstport",
        "5000",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    )
    assert all("RETURN" not in rule for rule in (rules.local[1], rules.forward[1]))
    assert "--closed" not in guard_command("p", hub, "docker_gwbridge", 443, 80)


def test_the_image_map_is_read_again_only_once_up_replaced_it(tmp_path, monkeypatch):
    path = tmp_path / "images.json"
    path.write_text('{"hubforge/lab:k1": "127.0.0.1:5000/hubforge/lab@sha256:ab"}')
    spawner = HubforgeSwarmSpawner(image_map=str(path))
    assert spawner.registry_ref("hubforge/lab:k1") == "127.0.0.1:5000/hubforge/lab@sha256:ab"
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs))
    for _ in range(3):  # a home page with three running labs
        assert spawner.registry_ref("hubforge/lab:k1") == "127.0.0.1:5000/hubforge/lab@sha256:ab"
    assert opened == []
    staged = tmp_path / "images.tmp"  # as `invoke up` writes it (distribute): whole, then in its place
    staged.write_text('{"hubforge/lab:k1": "127.0.0.1:5000/hubforge/lab@sha256:cd"}')
    staged.replace(path)
    assert spawner.registry_ref("hubforge/lab:k1") == "127.0.0.1:5000/hubforge/lab@sha256:cd"
    assert opened == [str(path)]
