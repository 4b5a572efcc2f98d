"""The one gateway to the Docker daemon: every Docker SDK call of the build goes through here."""

from __future__ import annotations

import contextlib
import http.client
import importlib
import io
import json
import logging
import os
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

from hub_ext.backup.gateway import JobCalls, label_filter
from hub_ext.helpers.quota import LOOP_CAPABILITIES, LOOP_DEVICE_RULES
from hub_ext.labs.runtime import LOG_DRIVER, default_log_options
from hub_ext.naming import ROLE_LABEL

from .errors import BuildFailed, DockerUnavailable, HubforgeError

log = logging.getLogger(__name__)

T = TypeVar("T")
START_HINT = "start it with `invoke setup` (as root on Debian/Ubuntu) or `sudo dockerd &`, then retry"
LOG_TAIL = 30


class _Lazy:
    """A module imported at its first use: the Docker SDK (and requests under it) cost more to import than a no-op
    build takes, which needs none of it."""

    def __init__(self, name: str) -> None:
        self._name, self._module = name, None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


docker = _Lazy("docker")
requests = _Lazy("requests")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Light:
    """The few Engine API calls a no-op build makes (ping, image inspect, tag), over the daemon's unix socket with
    the standard library. Everything else goes through the SDK."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path, self.timeout = path, timeout

    @classmethod
    def for_environment(cls) -> Light | None:
        host = os.environ.get("DOCKER_HOST", "") or "unix:///var/run/docker.sock"
        return cls(host.removeprefix("unix://")) if host.startswith("unix://") else None

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        connection = _UnixHTTPConnection(self.path, self.timeout)
        try:
            connection.request(method, path)
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    def image(self, ref: str) -> dict | None:
        status, body = self.request("GET", f"/images/{urllib.parse.quote(ref, safe='/:@')}/json")
        if status == 404:
            return None
        if status != 200:
            raise HubforgeError(f"the Docker daemon answered {status} for image {ref}: {body[:200]!r}")
        return json.loads(body)

    def tag(self, ref: str, repository: str, tag: str) -> None:
        query = urllib.parse.urlencode({"repo": repository, "tag": tag})
        status, body = self.request("POST", f"/images/{urllib.parse.quote(ref, safe='/:@')}/tag?{query}")
        if status != 201:
            raise HubforgeError(f"cannot tag {ref} as {repository}:{tag}: {body[:200]!r}")


class Docker:
    """A thin, synchronous wrapper over docker-py with errors a user can act on."""

    def __init__(self, client: Any = None, timeout: int = 600) -> None:
        self._client, self.timeout = client, timeout
        self.light = Light.for_environment() if client is None else None
        if client is not None:
            return
        if self.light is not None:
            try:
                status, _ = self.light.request("GET", "/_ping")
            except OSError as exc:
                raise DockerUnavailable(
                    f"the Docker daemon is not reachable at {self.light.path} ({exc.strerror or exc}); {START_HINT}"
                ) from None
            if status != 200:
                raise DockerUnavailable(
                    f"the Docker daemon at {self.light.path} answered {status} to a ping; {START_HINT}"
                )
        else:
            self.client.ping()

    @property
    def client(self):
        """The SDK's client, made at its first use."""
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=self.timeout)
                if self.light is None:
                    self._client.ping()
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise DockerUnavailable(f"the Docker daemon is not reachable ({_short(exc)}); {START_HINT}") from exc
        return self._client

    # -- images ------------------------------------------------------------------------------------
    def image(self, ref: str) -> dict | None:
        """`docker image inspect` of a tag or digest reference, or None when it is not in the local store."""
        if self.light is not None:
            return self.light.image(ref)
        try:
            return self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None

    def image_id(self, ref: str) -> str | None:
        """The image id for a tag or digest reference, or None when it is not in the local store."""
        found = self.image(ref)
        return found["Id"] if found else None

    def inspect(self, ref: str) -> dict:
        """`docker image inspect` of an image that must be here."""
        found = self.image(ref)
        if found is None:
            raise HubforgeError(f"no image {ref!r} here; build it or pull it first")
        return found

    def tag(self, ref: str, repository: str, tag: str) -> None:
        if self.light is not None:
            self.light.tag(ref, repository, tag)
            return
        self.client.api.tag(ref, repository, tag, force=True)

    def save(self, ref: str, path: Path) -> None:
        """`docker save` of one image into `path`."""
        with path.open("wb") as out:
            for chunk in self.client.api.get_image(ref, chunk_size=1 << 20):
                out.write(chunk)

    def load(self, path: Path, ref: str, layers: list[str]) -> str:
        """`docker load` of an archive that holds `ref` with these layers (diff ids); returns the image id the store
        gave it. The layers are checked rather than the id: with the containerd image store an id is the digest of a
        manifest, not of the config that hubforge wrote."""
        with path.open("rb") as data:
            for message in self.client.api.load_image(data):
                if "error" in message:
                    raise HubforgeError(f"docker load of {path.name} failed: {message['error'].strip()}")
        found = self.inspect(ref)
        if found.get("RootFS", {}).get("Layers") != [f"sha256:{layer}" for layer in layers]:
            raise HubforgeError(f"docker load of {path.name} did not give {ref} the layers it was written with")
        return found["Id"]

    def pull(self, reference: str) -> None:
        try:
            self.client.api.pull(reference)
        except docker.errors.APIError as exc:
            raise HubforgeError(
                f"cannot pull {reference}: {_short(exc)}; use --base=bootstrap when no registry answers"
            ) from exc

    def registry_problem(self, reference: str, timeout: float = 8.0) -> str:
        """Why the registry behind `reference` does not answer a manifest request, in a few words; "" when it does
        (--base=auto bootstraps instead, and says why)."""
        try:
            api = docker.APIClient(base_url=self.client.api.base_url, timeout=timeout)
            api.inspect_distribution(reference)
            return ""
        except requests.exceptions.Timeout:
            return f"did not answer within {timeout:g} s"
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return f"did not give its manifest ({_short(exc)[:120]})"

    def images(self, repository: str) -> list[dict]:
        return self.client.api.images(name=repository)

    def remove_image(self, ref: str) -> bool:
        try:
            self.client.api.remove_image(ref, noprune=False)
            return True
        except docker.errors.ImageNotFound:
            return False  # already gone: the goal state
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # used by a container: keep it, say so
                log.warning("keeping %s: %s", ref, _short(exc))
                return False
            raise

    # -- registries -------------------------------------------------------------------------------
    def login(self, registry: str, username: str, password: str) -> None:
        try:
            self.client.login(username=username, password=password, registry=registry or None, reauth=True)
        except docker.errors.APIError as exc:  # the message never contains the password
            raise HubforgeError(f"login to {registry or 'Docker Hub'} as {username} failed: {_short(exc)}") from None

    def push(self, repository: str, tag: str, auth: Mapping[str, str] | None = None) -> str:
        """Push one tag (with `auth`, else the credentials of the last login to that registry); returns the digest the
        registry reported."""
        digest = None
        for chunk in self.client.api.push(
            repository, tag=tag, stream=True, decode=True, auth_config=dict(auth) if auth else None
        ):
            if "error" in chunk:
                raise HubforgeError(f"push of {repository}:{tag} failed: {chunk['error'].strip()}")
            digest = (chunk.get("aux") or {}).get("Digest", digest)
        if not digest:
            raise HubforgeError(f"push of {repository}:{tag} reported no digest")
        return digest

    def remote_digest(self, reference: str) -> str:
        try:
            return self.client.api.inspect_distribution(reference)["Descriptor"]["digest"]
        except docker.errors.APIError as exc:
            raise HubforgeError(f"cannot read {reference} back from its registry: {_short(exc)}") from None

    def try_pull(self, reference: str) -> bool:
        """Pull when the registry has it; False when it does not (or cannot be reached)."""
        try:
            self.client.api.pull(reference)
            return True
        except docker.errors.APIError as exc:
            log.info("no %s in the remote cache: %s", reference, _short(exc))
            return False

    # -- builds ------------------------------------------------------------------------------------
    def build(
        self,
        context: Path,
        tag: str,
        labels: Mapping[str, str],
        on_line: Callable[[str], None],
        dockerfile: str = "Dockerfile",
        nocache: bool = False,
    ) -> str:
        """Build `context` with the classic builder; stream each log line to `on_line`.

        On failure raise BuildFailed naming the failing step with the last LOG_TAIL lines.
        """
        lines: list[str] = []
        step = "(before the first step)"
        image_id = None
        stream = self.client.api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            labels=dict(labels),
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            nocache=nocache,
            network_mode="none",  # hermetic: no network in builds
        )
        try:
            for chunk in stream:
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        if not line.strip():
                            continue
                        lines.append(line)
                        if line.startswith("Step "):
                            step = line
                        on_line(line)
                elif "error" in chunk:
                    tail = "\n".join(lines[-LOG_TAIL:])
                    raise BuildFailed(f"building {tag} failed at {step}\n{tail}\nerror: {chunk['error'].strip()}")
                elif "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise BuildFailed(f"building {tag} failed at {step}: {_short(exc)}") from exc
        if image_id is None:
            image_id = self.image_id(tag)
        if image_id is None:
            raise BuildFailed(f"building {tag} ended without an image\n" + "\n".join(lines[-LOG_TAIL:]))
        return image_id

    # -- throwaway containers ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _tool_container(self, image: str, command: list[str], **kwargs) -> Iterator[Any]:
        """A container of `image` made for one tool's use; it is always removed."""
        try:
            container = self.client.containers.create(image, command, labels={ROLE_LABEL: "tool"}, **kwargs)
        except docker.errors.APIError as exc:
            raise HubforgeError(f"cannot create a container of {image}: {_short(exc)}") from None
        try:
            yield container
        finally:
            try:
                container.remove(force=True, v=True)  # with the anonymous volumes an image's VOLUME made
            except docker.errors.NotFound:
                pass  # already removed

    def read_filesystem(self, image: str, read: Callable[[IO[bytes]], T]) -> T:
        """`read(stream)` of the root filesystem of `image` as a tar (`docker export`) of a container that is created,
        never started, so nothing in the image runs."""
        # a container needs a command to be created; this one never runs
        with self._tool_container(image, ["/nonexistent"], entrypoint=[], network_disabled=True) as container:
            try:
                return read(io.BufferedReader(_ChunkStream(container.export(chunk_size=1 << 20)), 1 << 20))
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise HubforgeError(f"cannot export the filesystem of {image}: {_short(exc)}") from None

    def run_output(self, image: str, command: list[str], **kwargs) -> str:
        """Run a short-lived container and return its output; the container is always removed."""
        with self._tool_container(image, command, **kwargs) as container:
            try:
                container.start()
                status = container.wait(timeout=600)
                output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            except docker.errors.APIError as exc:  # e.g. the command does not exist in this image
                raise HubforgeError(f"{command[0]} cannot run in {image}: {_short(exc)}") from None
        if status.get("StatusCode", 1) != 0:
            tail = "\n".join(output.strip().splitlines()[-15:])
            raise HubforgeError(f"{' '.join(command)[:80]} in {image} exited {status.get('StatusCode')}:\n{tail}")
        return output


def stored_credentials(host: str) -> tuple[str, str] | None:
    """The user and password that `docker login HOST` stored (config file or credential helper), if any."""
    try:
        found = docker.auth.resolve_authconfig(docker.auth.load_config(), None if "docker.io" in host else host)
    except docker.errors.DockerException as exc:
        log.info("no stored credentials for %s: %s", host, _short(exc))
        return None
    found = found or {}
    user, password = found.get("username") or found.get("Username"), found.get("password") or found.get("Password")
    return (user, password) if user and password else None


class _ChunkStream(io.RawIOBase):
    """A readable file over an iterator of byte chunks (the SDK's streamed export), so a tar reader takes it whole
    without it ever being on disk."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks, self._left = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._left:
            self._left = next(self._chunks, None)
            if self._left is None:
                self._left = b""
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size], self._left = self._left[:size], self._left[size:]
        return size


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def removed(remove: Callable[[str], object], name: str) -> bool:
    """Call a removal; False when the object was already gone."""
    try:
        remove(name)
        return True
    except docker.errors.NotFound:
        return False


class StackDocker(Docker, JobCalls):
    """The stack's Docker calls: probes, labelled containers and volumes."""

    def run_gpu_probe(self, image: str, device_requests: list[dict]) -> tuple[int | None, str]:
        """Run the probe once with a GPU request; the container is always removed.

        Returns (exit code, output), or (None, reason) when Docker refuses the GPU request itself,
        which is what a host without the NVIDIA runtime does.
        """
        requests_ = [docker.types.DeviceRequest(**r) for r in device_requests]
        return self.run_once(image, None, {"device_requests": requests_}, {ROLE_LABEL: "gpu-probe"}, timeout=60)

    def remove_quota_files(self, image: str, folder: str, devices: list[str]) -> tuple[int | None, str]:
        """Detach and delete the files of removed quota'd volumes (hub_ext.helpers.quota remove), in a one-shot
        container of the hub's image: root, no network, CAP_SYS_ADMIN and loop devices only, the quota folder."""
        host = {
            "binds": [f"{folder}:{folder}:rw", "/dev:/dev"],
            "cap_drop": ["ALL"],
            "cap_add": list(LOOP_CAPABILITIES),
            "device_cgroup_rules": list(LOOP_DEVICE_RULES),
            "network_mode": "none",
            "read_only": True,
        }
        command = ["python3", "-m", "hub_ext.helpers.quota", "remove", *devices]
        return self.run_once(image, command, host, {ROLE_LABEL: "helper"}, user="0:0", timeout=120)

    def run_once(
        self,
        image: str,
        command: list[str] | None,
        host: dict,
        labels: dict[str, str],
        user: str | None = None,
        timeout: int = 60,
    ) -> tuple[int | None, str]:
        """Run a one-shot container (its log rotated like every other) and always remove it: (exit code, output), or
        (None, Docker's reason) when Docker refuses it."""
        try:
            with self._one_shot(image, command, host, labels, user) as container:
                code = self.client.api.wait(container, timeout=timeout)["StatusCode"]
                return code, self.client.api.logs(container).decode(errors="replace")
        except docker.errors.APIError as exc:
            return None, _short(exc)

    def cpu_count(self) -> int:
        """The daemon's CPUs: Compose refuses a `cpus` limit above it."""
        return int(self.client.info().get("NCPU") or 1)

    def inspect_container(self, container: str) -> dict | None:
        try:
            return self.client.api.inspect_container(container)
        except docker.errors.NotFound:
            return None

    def remove_container(self, container: str) -> None:
        try:
            self.client.api.remove_container(container, force=True, v=False)
        except docker.errors.NotFound:
            pass  # already gone: the goal state
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise

    def networks(self, labels: Mapping[str, str]) -> list[dict]:
        filters = label_filter(labels)
        return self.client.api.networks(filters=filters)

    def remove_network(self, network: str) -> bool:
        """Remove a network, first disconnecting whatever is still on it (a hub that outlived `down`)."""
        try:
            details = self.client.api.inspect_network(network)
            for container in details.get("Containers") or {}:
                self.client.api.disconnect_container_from_network(container, network, force=True)
            self.client.api.remove_network(network)
            return True
        except docker.errors.NotFound:
            return False

    def logs(self, container: str, tail: int = 200) -> str:
        return self.client.api.logs(container, tail=tail).decode(errors="replace")

    # -- the swarm ---------------------------------------------------------------------------------------
    def swarm_state(self) -> dict[str, Any]:
        """This daemon's swarm membership: LocalNodeState (inactive, active...), ControlAvailable (a manager)."""
        return self.client.info().get("Swarm") or {}

    def swarm_init(self, advertise_addr: str) -> None:
        try:
            self.client.swarm.init(advertise_addr=advertise_addr)
        except docker.errors.APIError as exc:
            raise HubforgeError(
                f"cannot make this host a swarm manager ({_short(exc)}); "
                f"run `docker swarm init --advertise-addr <this host's address>` yourself"
            ) from None

    def swarm_node_id(self) -> str:
        return self.swarm_state().get("NodeID", "")

    def nodes(self) -> list[dict]:
        return self.client.api.nodes()

    def services(self, labels: Mapping[str, str]) -> list[dict]:
        filters = label_filter(labels)
        return self.client.api.services(filters=filters)

    def tasks(self, service: str) -> list[dict]:
        try:
            return self.client.api.tasks(filters={"service": service})
        except docker.errors.NotFound:
            return []

    def remove_service(self, service: str) -> bool:
        return removed(self.client.api.remove_service, service)

    def run_on_node(
        self,
        node: str,
        image: str,
        command: list[str],
        project: str,
        secret: tuple[str, bytes] | None = None,
        timeout: float = 3600.0,
    ) -> list[dict[str, Any]]:
        """A hub_ext helper run once on swarm node `node` (hub_ext.helpers.onnode), from `image` of the stack's
        registry (after a login to it, whose credentials docker-py hands to Swarm); with `secret` (file name, data)
        as a swarm secret of its own, made for this run and removed after it. Its answer, parsed; a HubforgeError
        with the task's reason when it gave none."""
        from hub_ext.helpers import onnode

        labels = onnode.helper_labels(project)
        secret_id, references = None, []
        if secret is not None:
            secret_name = onnode.helper_name(project)
            secret_id = self.client.api.create_secret(secret_name, secret[1], labels=labels)["ID"]
            references = [docker.types.SecretReference(secret_id, secret_name, secret[0], "0", "0", 0o400)]
        template = onnode.helper_template(
            image, command, project, node, docker.types.DriverConfig(LOG_DRIVER, default_log_options()), (), references
        )
        service_id = None
        try:
            service_id = self.client.api.create_service(template, name=onnode.helper_name(project), labels=labels)["ID"]
            deadline = time.monotonic() + timeout
            while (state := onnode.task_state(tasks := self.tasks(service_id))) not in onnode.FINISHED:
                if time.monotonic() > deadline:
                    raise HubforgeError(
                        f"the helper on node {node[:12]} did not finish within {timeout:.0f} s ({state or 'no task'})"
                    )
                time.sleep(0.3)
            logs = b"".join(self.client.api.service_logs(service_id, stdout=True, stderr=True))
            try:
                return onnode.helper_answer(logs.decode(errors="replace"), node, tasks)
            except RuntimeError as exc:
                raise HubforgeError(str(exc)) from None
        except docker.errors.APIError as exc:
            raise HubforgeError(f"Swarm refused the helper on node {node[:12]}: {_short(exc)}") from None
        finally:
            if service_id:
                self.remove_service(service_id)
            if secret_id:
                self.remove_secret_when_free(secret_id)

    def remove_secret_when_free(self, secret_id: str, timeout: float = 30.0) -> None:
        """A secret is in use until its service's task is gone, a moment after the service."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.api.remove_secret(secret_id)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError:
                if time.monotonic() > deadline:
                    log.warning("the helper's secret %s stays: it is still in use", secret_id[:12])
                    return
                time.sleep(0.3)

    def ensure_host_service(
        self,
        name: str,
        image: str,
        command: list[str],
        labels: Mapping[str, str],
        cap_add: list[str],
        ready_file: str,
        log_options: Mapping[str, str] | None = None,
    ) -> bool:
        """A global service on every node's host network, as root with only `cap_add`, on a read-only root, its log
        rotated (json-file with `log_options`). One that is there with the same image, command, labels and log stays;
        a different one is replaced. True when (re)made."""
        logs = {"Name": LOG_DRIVER, "Options": dict(log_options or default_log_options())}
        for service in self.client.api.services(filters={"name": name}):
            spec = service["Spec"]
            if spec["Name"] != name:
                continue
            container = spec["TaskTemplate"]["ContainerSpec"]
            if (
                container.get("Image") == image
                and container.get("Command") == command
                and spec.get("Labels") == dict(labels)
                and spec["TaskTemplate"].get("LogDriver") == logs
            ):
                return False
            self.remove_service(service["ID"])
        self.client.services.create(
            image,
            command=command,
            name=name,
            labels=dict(labels),
            container_labels=dict(labels),
            mode=docker.types.ServiceMode("global"),
            networks=["host"],
            user="0:0",
            read_only=True,
            cap_add=cap_add,
            cap_drop=["ALL"],
            env=["PYTHONDONTWRITEBYTECODE=1"],
            log_driver=logs["Name"],
            log_driver_options=logs["Options"],
            mounts=[docker.types.Mount("/tmp", None, type="tmpfs"), docker.types.Mount("/run", None, type="tmpfs")],
            restart_policy=docker.types.RestartPolicy(condition="any", delay=2_000_000_000),
            resources=docker.types.Resources(mem_limit=64 * 2**20),
            healthcheck=docker.types.Healthcheck(
                test=["CMD", "test", "-f", ready_file],
                interval=2_000_000_000,
                timeout=3_000_000_000,
                retries=3,
                start_period=30_000_000_000,
            ),
        )
        return True
