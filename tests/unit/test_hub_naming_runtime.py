"""Naming, the per-user runtime, and the spawner's pre-spawn step (add and remove by group)."""

from __future__ import annotations

import asyncio

import pytest
from dockerspawner import DockerSpawner
from jupyterhub import orm

from hub_ext.labs.gpu import GpuDecision, allocate, decide, lab_gpu_options
from hub_ext.labs.policy import Policy, builtin_policy, merge
from hub_ext.labs.runtime import lab_runtime
from hub_ext.naming import (
    DOCKER_PRIVILEGED_GROUP,
    DOCKER_SOCK_GROUP,
    account_id,
    escape_username,
    user_names,
)
from hub_ext.spawn.spawner import ensure_builtin_groups

from ..support.fakedaemon import make_spawner

OFF = GpuDecision("off", False, "off")


@pytest.mark.parametrize(
    ("name", "escaped"),
    [("alice", "alice"), ("first.last", "first-2elast"), ("jöran", "j-c3-b6ran"), ("a-b", "a-2db"), ("x_y", "x-5fy")],
)
def test_escaping_is_dockerspawners(name, escaped):
    assert escape_username(name) == escaped == DockerSpawner._escape(name)


def test_names_of_a_dotted_user():
    names = user_names("jupyterlab", "first.last")
    assert names.container == "jupyterlab-first-2elast"
    assert names.volumes == {
        "home": "jupyterlab-first-2elast_home",
        "workspace": "jupyterlab-first-2elast_workspace",
        "cache": "jupyterlab-first-2elast_cache",
    }
    assert names.mounts()["jupyterlab-first-2elast_workspace"] == "/home/lab/workspace"


def policy_of(groups) -> Policy:
    """The merged policy of a user in these groups (each with its built-in meaning), over a default of 512 pids."""
    return merge(Policy(pids_limit=512), {group: builtin_policy(group) for group in groups}).policy


def runtime(groups):
    return lab_runtime(
        names=user_names("p", "bob"),
        policy=policy_of(groups),
        shared_volume="p_shared",
        docker_socket_gid=998,
    )


def test_plain_user_is_locked_down():
    plain = runtime([])
    assert plain.host_config == {
        "pids_limit": 512,
        "cpu_shares": 128,
        "auto_remove": False,
        "read_only": True,
        "log_config": {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}},
        "tmpfs": {"/tmp": "mode=1777,nosuid,nodev"},
        "privileged": False,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "device_requests": [],
    }
    assert "/var/run/docker.sock" not in plain.volumes
    assert plain.volumes["p_shared"] == {"bind": "/mnt/shared", "mode": "rw"}


def test_a_lab_image_that_writes_its_root_can_have_it_writable():
    writable = lab_runtime(
        names=user_names("p", "bob"), policy=policy_of([]), shared_volume="p_shared", read_only_root=False
    )
    assert "read_only" not in writable.host_config and "tmpfs" not in writable.host_config


def test_docker_sock_group_mounts_the_socket_with_its_group():
    granted = runtime([DOCKER_SOCK_GROUP])
    assert granted.volumes["/var/run/docker.sock"] == {"bind": "/var/run/docker.sock", "mode": "rw"}
    assert granted.host_config["group_add"] == ["998"]
    assert granted.host_config["privileged"] is False


def test_privileged_group_is_privileged_without_cap_drop():
    granted = runtime([DOCKER_PRIVILEGED_GROUP])
    assert granted.host_config["privileged"] is True
    assert "cap_drop" not in granted.host_config and "security_opt" not in granted.host_config


@pytest.mark.parametrize(
    ("mode", "probe", "enabled"),
    [
        ("off", {"gpus": [{"name": "A100"}]}, False),
        ("on", None, True),
        ("auto", None, False),
        ("auto", {"gpus": [], "reason": "nvidia-smi not found"}, False),
        ("auto", {"gpus": [{"index": 0, "name": "NVIDIA A100", "uuid": "GPU-1", "memory_mb": 40960}]}, True),
    ],
)
def test_gpu_decision(mode, probe, enabled):
    decision = decide(mode, probe)
    assert decision.enabled is enabled
    requests, env = lab_gpu_options(allocate("all", decision, []))
    assert bool(requests) is enabled and bool(env) is enabled
    if enabled:
        assert requests[0]["Count"] == -1 and requests[0]["Capabilities"] == [["gpu"]]
        assert env["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_gpu_decision_says_why():
    assert "nvidia-smi not found" in decide("auto", {"gpus": [], "reason": "nvidia-smi not found"}).reason
    assert "1 GPU(s): NVIDIA A100" in decide("auto", {"gpus": [{"name": "NVIDIA A100"}]}).reason
    with pytest.raises(ValueError):
        decide("sometimes", None)


# -- the spawner's pre-spawn step, with a real (in-memory) hub database: tests/support/fakedaemon.py ----------
def test_each_lab_gets_its_own_network_and_the_hub_joins_it(db):
    alice, _ = make_spawner(db, "alice")
    bob, _ = make_spawner(db, "bob")
    bob.docker = alice.docker  # one daemon
    asyncio.run(alice.apply_runtime())
    asyncio.run(bob.apply_runtime())
    daemon = alice.docker
    assert alice.network_name == "p_net-alice" and bob.network_name == "p_net-bob"
    subnets = {name: net["IPAM"]["Config"][0]["Subnet"] for name, net in daemon.networks.items()}
    # 10.213.0.0/29 is taken by another network: the pool's next /29s, one per lab
    assert subnets["p_net-alice"] == "10.213.0.8/29" and subnets["p_net-bob"] == "10.213.0.16/29"
    assert daemon.networks["p_net-alice"]["Labels"] == {
        "hubforge.project": "p",
        "hubforge.user": "alice",
        "hubforge.role": "lab-network",
    }
    assert daemon.joined == [("0123456789ab", "p_net-alice", ("hub",)), ("0123456789ab", "p_net-bob", ("hub",))]
    asyncio.run(alice.apply_runtime())  # again: the same network, and the hub is not joined twice
    assert len(daemon.joined) == 2 and len(daemon.networks) == 3


def test_a_network_of_another_project_is_never_joined(db):
    spawner, _ = make_spawner(db, "carol")
    spawner.docker.networks["p_net-carol"] = {
        "Name": "p_net-carol",
        "Labels": {"hubforge.project": "other"},
        "Containers": {},
        "IPAM": {"Config": []},
    }
    with pytest.raises(RuntimeError, match="belongs to the hubforge project 'other'"):
        asyncio.run(spawner.apply_runtime())
    assert spawner.docker.joined == []


def test_builtin_groups_come_back_after_deletion(db):
    assert ensure_builtin_groups(db) == [DOCKER_SOCK_GROUP, DOCKER_PRIVILEGED_GROUP]
    db.delete(orm.Group.find(db, DOCKER_SOCK_GROUP))
    db.commit()
    assert ensure_builtin_groups(db) == [DOCKER_SOCK_GROUP]
    assert ensure_builtin_groups(db) == []


def test_pre_spawn_adds_and_removes_by_current_groups(db):
    ensure_builtin_groups(db)  # the hub's start makes them (load_groups)
    spawner, user = make_spawner(db)
    asyncio.run(spawner.apply_runtime())
    assert "/var/run/docker.sock" not in spawner.volumes and spawner.extra_host_config["privileged"] is False

    user.groups.append(orm.Group.find(db, DOCKER_SOCK_GROUP))
    user.groups.append(orm.Group.find(db, DOCKER_PRIVILEGED_GROUP))
    db.commit()
    asyncio.run(spawner.apply_runtime())
    assert "/var/run/docker.sock" in spawner.volumes and spawner.extra_host_config["privileged"] is True

    user.groups.clear()
    db.commit()
    asyncio.run(spawner.apply_runtime())
    asyncio.run(spawner.apply_runtime())  # twice: idempotent
    assert "/var/run/docker.sock" not in spawner.volumes
    assert spawner.extra_host_config["privileged"] is False and spawner.extra_host_config["cap_drop"] == ["ALL"]
    assert spawner.base_settings()["host"]["dns"] == ["1.1.1.1"]  # kept, for the network sandbox (its namespace's)


def test_pre_spawn_names_and_labels_everything(db):
    spawner, _ = make_spawner(db)
    asyncio.run(spawner.apply_runtime())
    assert spawner.object_name == "jupyterlab-first-2elast"
    assert set(spawner.volumes) >= {
        "jupyterlab-first-2elast_home",
        "jupyterlab-first-2elast_workspace",
        "jupyterlab-first-2elast_cache",
        "jupyterhub_shared",
    }
    assert spawner.docker.volumes["jupyterlab-first-2elast_workspace"] == {
        "hubforge.project": "p",
        "hubforge.user": "first.last",
        "hubforge.volume": "workspace",
        "hubforge.account": account_id(spawner.user.orm_user.created),
    }
    assert spawner.docker.volumes["jupyterhub_shared"] == {"hubforge.project": "p", "hubforge.volume": "shared"}
    assert spawner.extra_create_kwargs["labels"] == {"hubforge.project": "p", "hubforge.user": "first.last"}


def test_name_is_right_before_any_spawn(db):
    """After a hub restart the spawner must find the running container under the same name."""
    spawner, _ = make_spawner(db, "jöran")
    assert spawner.object_name == "jupyterlab-j-c3-b6ran"


def test_a_deleted_users_volumes_go_with_them_and_never_reach_the_next_owner(db):
    """Deleting a user (delete_forever, which JupyterHub calls for every route) removes their volumes; a volume that
    stayed anyway (its removal failed) is refused to whoever takes the name next, since it names the old account."""
    first, first_user = make_spawner(db, "dana")
    asyncio.run(first.apply_runtime())
    daemon = first.docker
    mine = {n for n in daemon.volumes if n.startswith("jupyterlab-dana_")}
    assert len(mine) == 3
    results = asyncio.run(first.delete_forever())
    assert {r["result"] for r in results} == {"removed"} and not mine & set(daemon.volumes)

    asyncio.run(first.apply_runtime())  # the volumes are back, as if their removal had failed
    db.delete(first_user)
    db.commit()
    newcomer, _ = make_spawner(db, "dana")
    newcomer.docker = daemon
    with pytest.raises(RuntimeError, match="made for an earlier user named 'dana'.*docker volume rm jupyterlab-dana_"):
        asyncio.run(newcomer.apply_runtime())


def test_volumes_from_before_the_account_label_stay_their_users(db):
    spawner, _ = make_spawner(db, "erin")
    spawner.docker.volumes["jupyterlab-erin_home"] = {
        "hubforge.project": "p",
        "hubforge.user": "erin",
        "hubforge.volume": "home",
    }
    asyncio.run(spawner.apply_runtime())  # mounted as before
    assert "jupyterlab-erin_home" in spawner.volumes


def test_a_lab_runs_in_its_network_sandbox_which_outlives_its_stops(db):
    """The first start makes the user's network and sandbox; later starts and stops make and remove nothing on the
    host's network; deleting the user removes both."""
    alice, _ = make_spawner(db, "alice")
    daemon = alice.docker
    asyncio.run(alice.apply_runtime())
    (sandbox,) = [c for c in daemon.containers.values() if c["Name"] == "jupyterlab-alice-net"]
    assert sandbox["Networks"] == ["p_net-alice"] and sandbox["Running"]
    assert sandbox["Labels"] == {
        "hubforge.project": "p",
        "hubforge.role": "lab-sandbox",
        "hubforge.sandbox-of": "alice",
    }
    host = sandbox["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] and sandbox["User"] == "65534:65534"
    assert host["Dns"] == ["1.1.1.1"]  # the operator's DNS goes to the namespace's holder...
    assert alice.extra_host_config["network_mode"] == "container:jupyterlab-alice-net"
    assert "dns" not in alice.extra_host_config  # ...which Docker refuses for a container in another's namespace
    assert alice.extra_create_kwargs["ports"] is None  # as it refuses exposed ports
    assert asyncio.run(alice.get_ip_and_port()) == ("10.213.0.10", 8888)  # the sandbox's address on the lab network

    asyncio.run(alice.remove_lab_network())  # what a stop does
    asyncio.run(alice.apply_runtime())  # the next start
    assert len(daemon.containers) == 1 and "p_net-alice" in daemon.networks and len(daemon.joined) == 1

    daemon.containers[next(iter(daemon.containers))]["Running"] = False  # a daemon restart stopped it
    asyncio.run(alice.apply_runtime())
    assert len(daemon.containers) == 1 and next(iter(daemon.containers.values()))["Running"]

    asyncio.run(alice.remove_lab_network(keep_sandbox=False))  # the user is deleted
    assert not daemon.containers and "p_net-alice" not in daemon.networks


def test_without_sandboxes_a_lab_joins_its_network_itself(db):
    alice, _ = make_spawner(db, "alice")
    alice.lab_sandboxes = False
    asyncio.run(alice.apply_runtime())
    assert not alice.docker.containers and "network_mode" not in alice.extra_host_config
    asyncio.run(alice.remove_lab_network())
    assert "p_net-alice" not in alice.docker.networks
