"""A Docker daemon's calls as the spawner makes them, recorded, and a spawner on an in-memory hub database: for the
unit tests of what a spawn asks of Docker (volumes, networks, group folders, GPU hand-outs). It stands in for the
daemon, never for the spawner under test."""

from __future__ import annotations

import contextlib
import io
import ipaddress

import docker
import pytest
from jupyterhub import orm

from hub_ext.helpers import quota
from hub_ext.spawn.spawner import HubforgeSpawner


def _has_label(labels: dict, wanted: str) -> bool:
    key, _, value = wanted.partition("=")
    return key in labels and (not value or labels[key] == value)


def _hosts(network: dict):
    """A network's addresses after its gateway: where its first container gets one."""
    subnet = ipaddress.ip_network(network["IPAM"]["Config"][0]["Subnet"])
    return list(subnet.hosts())[1:]


class UserStandIn:
    """The parts of jupyterhub.user.User the spawner reads: name, groups and the db session."""

    def __init__(self, orm_user, db):
        self.orm_user, self.db, self.name = orm_user, db, orm_user.name
        self.url = f"/user/{self.name}/"

    @property
    def groups(self):
        return self.orm_user.groups


class FakeDaemon:
    """Stands in for the Docker daemon's volume calls; records what the spawner creates."""

    def __init__(self):
        self.volumes: dict[str, dict] = {}
        self.options: dict[str, dict] = {}  # volume -> the local driver's options it was made with
        self.images: dict[str, dict] = {}  # reference -> Docker's inspection of the image
        self.containers: dict[str, dict] = {}  # id -> {"Image", "Cmd", "Labels", "HostConfig", "State"}
        self.helpers: list[dict] = []  # one-shot containers run, in order
        self.ran: dict[str, list[str]] = {}  # container id -> its command
        self.networks: dict[str, dict] = {
            "bridge": {"Name": "bridge", "IPAM": {"Config": [{"Subnet": "10.213.0.0/29"}]}}
        }
        self.joined: list[tuple] = []

    def inspect_named(self, name: str) -> dict:
        """A created container, looked up by id or name as Docker does (404 when none)."""
        for cid, found in self.containers.items():
            if name in (cid, found.get("Name")):
                joined = found.get("Networks") or []
                networks = {net: {"IPAddress": str(_hosts(self.networks[net])[0])} for net in joined}
                return {"Id": cid, "NetworkSettings": {"Networks": networks}, "State": {"Running": found["Running"]}}
        error = Exception("not found")
        error.response = type("R", (), {"status_code": 404})()
        raise error

    async def __call__(self, method, *args, **kwargs):
        assert hasattr(docker.APIClient, method), f"docker's APIClient has no method {method!r}"
        if method == "inspect_volume":
            if args[0] not in self.volumes:
                error = Exception("not found")
                error.response = type("R", (), {"status_code": 404})()
                raise error
            return {"Name": args[0], "Labels": self.volumes[args[0]], "Options": self.options.get(args[0]) or None}
        if method == "create_volume":
            self.volumes[args[0]] = kwargs["labels"]
            self.options[args[0]] = kwargs.get("driver_opts") or {}
            return {"Name": args[0]}
        if method == "remove_volume":
            del self.volumes[args[0]]
            return None
        if method in ("inspect_network", "connect_container_to_network") and args[-1] not in self.networks:
            error = Exception("not found")
            error.response = type("R", (), {"status_code": 404})()
            raise error
        if method == "inspect_network":
            return self.networks[args[0]]
        if method == "networks":
            return list(self.networks.values())
        if method == "create_network":
            (pool,) = kwargs["ipam"]["Config"]
            self.networks[args[0]] = {
                "Name": args[0],
                "Labels": kwargs["labels"],
                "Containers": {},
                "IPAM": {"Config": [{"Subnet": pool["Subnet"], "Gateway": pool["Gateway"]}]},
            }
            return {"Id": args[0]}
        if method == "connect_container_to_network":
            container, network = args
            self.networks[network]["Containers"][container + "0" * 52] = {"Name": "hub"}
            self.joined.append((container, network, tuple(kwargs["aliases"])))
            return None
        if method == "inspect_image":
            if args[0] not in self.images:
                error = Exception("not found")
                error.response = type("R", (), {"status_code": 404})()
                raise error
            return self.images[args[0]]
        if method == "inspect_container" and args[0] == "0123456789ab":
            return {"Id": args[0], "Config": {"Image": "hubforge/hub:1"}}
        if method == "inspect_container":
            return self.inspect_named(args[0])
        if method == "containers":
            wanted = kwargs.get("filters", {}).get("label", [])
            return [
                {"Id": cid, "Labels": c["Labels"]}
                for cid, c in self.containers.items()
                if all(_has_label(c["Labels"], label) for label in wanted)
            ]
        if method == "create_container":
            cid = f"c{len(self.containers)}"
            self.containers[cid] = {
                "Name": kwargs.get("name"),
                "Image": kwargs.get("image") or args[0],
                "Networks": list((kwargs.get("networking_config") or {}).get("EndpointsConfig") or {}),
                "Running": False,
                "Cmd": kwargs.get("command"),
                "Labels": kwargs.get("labels") or {},
                "HostConfig": kwargs.get("host_config") or {},
                "User": kwargs.get("user"),
            }
            if self.containers[cid]["Labels"].get("hubforge.role") == "helper":  # one-shot, not a network sandbox
                self.helpers.append(self.containers[cid])
            self.ran[cid] = kwargs.get("command")
            return {"Id": cid}
        if method in ("start", "remove_container"):
            cid = self.inspect_named(args[0])["Id"] if args[0] not in self.containers else args[0]
            if method == "remove_container":
                self.containers.pop(cid, None)
            else:
                self.containers[cid]["Running"] = True
            return None
        if method == "disconnect_container_from_network":
            return None
        if method == "remove_network":
            self.networks.pop(args[0])
            return None
        if method == "wait":
            return {"StatusCode": 0}
        if method == "logs":  # what the helper printed: the quota helper runs here, on this machine's files
            command = self.ran[args[0]]
            if command[:3] == ["python3", "-m", "hub_ext.helpers.quota"]:
                # the file work, here; no loop device is attached (that needs the host's /dev and CAP_SYS_ADMIN)
                with contextlib.redirect_stdout(io.StringIO()) as printed:
                    args = [arg for arg in command[3:] if arg != "--attach"]
                    quota.main(args + ["--no-attach"] if args[0] == "prepare-all" else args)
                return printed.getvalue().encode()
            return b'hubforge-volumes: [{"result": "owned"}]\n'  # the group folder's chown
        raise AssertionError(f"unexpected docker call {method}")


@pytest.fixture
def db():
    return orm.new_session_factory("sqlite:///:memory:")()


def make_spawner(db, name="first.last"):
    user = orm.User(name=name)
    db.add(user)
    db.commit()
    spawner = HubforgeSpawner(user=UserStandIn(user, db), _deprecated_db_session=db)
    spawner.project, spawner.volume_prefix, spawner.docker_socket_gid = "p", "jupyterlab", 998
    spawner.extra_host_config = {"dns": ["1.1.1.1"]}  # operator setting that must survive
    spawner.docker = FakeDaemon()
    spawner.hub_container, spawner.stack_network = "0123456789ab", "p_net"
    return spawner, user
