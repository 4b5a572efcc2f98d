"""The Docker calls a restic job needs, over docker-py's low-level API: one-shot containers that are always removed,
exec, and labelled containers and volumes. hubforge's gateway (hubforge.docker_io.StackDocker) is made of these too;
the backup service uses them alone (HubDocker)."""

from __future__ import annotations

import contextlib
import importlib
import io
import posixpath
import tarfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hub_ext.labs.runtime import LOG_DRIVER, default_log_options


def sdk() -> Any:
    """docker-py, imported at its first use: `invoke` commands that need no Docker do not pay for its import."""
    return importlib.import_module("docker")


def label_filter(labels: Mapping[str, str]) -> dict[str, list[str]]:
    """The API's filter for objects carrying every one of `labels`."""
    return {"label": [f"{k}={v}" for k, v in labels.items()]}


def files_archive(files: Mapping[str, bytes]) -> bytes:
    """A tar of `files` (name in the folder -> content), each root's and readable by its owner only."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in sorted(files.items()):
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode, entry.uid, entry.gid = len(content), 0o400, 0, 0
            archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


def folders_of(files: Mapping[str, bytes]) -> dict[str, dict[str, bytes]]:
    """Absolute file paths grouped by their folder: each folder becomes an anonymous volume of the container."""
    folders: dict[str, dict[str, bytes]] = {}
    for path, content in files.items():
        if not path.startswith("/") or path.endswith("/"):
            raise ValueError(f"a file put into a container needs an absolute path, got {path!r}")
        folders.setdefault(posixpath.dirname(path), {})[posixpath.basename(path)] = content
    return folders


def reason(exc: BaseException) -> str:
    """Docker's refusal in one line."""
    text = str(getattr(exc, "explanation", None) or exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


class JobCalls:
    """What a one-shot job does with Docker; `client` is a docker-py client (the subclass says how it is made)."""

    client: Any

    def run_streamed(
        self,
        image: str,
        command: list[str],
        host: dict,
        labels: dict[str, str],
        environment: Mapping[str, str],
        user: str | None = None,
        on_line: Callable[[str], None] = lambda line: None,
        files: Mapping[str, bytes] | None = None,
    ) -> tuple[int | None, str, str]:
        """Run a one-shot container, handing each line of its stdout to `on_line` as it comes (a long job's progress):
        (exit code, stdout, stderr), or (None, "", Docker's reason) when Docker refuses it. The summary a job prints
        last is in the returned stdout, not necessarily among the lines handed on. `files` (absolute path -> content)
        are put into the container before it starts (see _one_shot)."""
        try:
            with self._one_shot(image, command, host, labels, user, environment, files) as container:
                pending = b""
                for chunk in self.client.api.logs(container, stdout=True, stderr=False, stream=True, follow=True):
                    *complete, pending = (pending + chunk).split(b"\n")
                    for raw in complete:
                        on_line(raw.decode(errors="replace"))
                code = self.client.api.wait(container)["StatusCode"]
                # the output itself is read once the container has exited: a stream that follows a container which
                # exits at once may end before the daemon has logged its last lines
                out = self.client.api.logs(container, stdout=True, stderr=False).decode(errors="replace")
                errors = self.client.api.logs(container, stdout=False, stderr=True).decode(errors="replace")
                return code, out, errors
        except sdk().errors.APIError as exc:
            return None, "", reason(exc)

    @contextlib.contextmanager
    def _one_shot(
        self,
        image: str,
        command: list[str] | None,
        host: dict,
        labels: dict[str, str],
        user: str | None,
        environment: Mapping[str, str] | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> Iterator[str]:
        """A started container (its log rotated like every other) that is removed however the block ends. Each folder
        of `files` is an anonymous volume of the container, filled (files 0400, root's) before it starts, and removed
        with it: how a file reaches a container on a node where no host path of it exists (a helper on a swarm
        worker), even with a read-only root."""
        container = None
        folders = folders_of(files or {})
        try:
            host_config = self.client.api.create_host_config(
                log_config={"type": LOG_DRIVER, "config": default_log_options()}, **host
            )
            created = self.client.api.create_container(
                image,
                command,
                user=user,
                host_config=host_config,
                labels=labels,
                environment=dict(environment or {}),
                volumes=sorted(folders) or None,
            )
            container = created["Id"]
            for folder, contents in sorted(folders.items()):
                self.client.api.put_archive(container, folder, files_archive(contents))
            self.client.api.start(container)
            yield container
        finally:
            if container:
                self._interrupt(container)
                try:
                    self.client.api.remove_container(container, force=True, v=True)  # its anonymous volumes too
                except sdk().errors.NotFound:
                    pass  # already gone

    def _interrupt(self, container: str, grace: int = 15) -> None:
        """A job still running when its block ends (its caller was stopped) gets SIGINT and `grace` seconds first:
        restic then removes its lock from the repository, which a kill would leave behind for half an hour."""
        try:
            if not (self.client.api.inspect_container(container).get("State") or {}).get("Running"):
                return
            self.client.api.kill(container, signal="SIGINT")
            self.client.api.wait(container, timeout=grace)
        except Exception:  # noqa: BLE001 -- gone, or slow to stop: the removal below forces it
            return

    def containers(self, labels: Mapping[str, str], all: bool = True) -> list[dict]:
        return self.client.api.containers(all=all, filters=label_filter(labels))

    def volumes(self, labels: Mapping[str, str]) -> list[dict]:
        return self.client.api.volumes(filters=label_filter(labels)).get("Volumes") or []

    def volume(self, name: str) -> dict | None:
        """A volume's inspect document (labels, driver, options, mountpoint), or None when there is none."""
        try:
            return self.client.api.inspect_volume(name)
        except sdk().errors.NotFound:
            return None

    def volume_users(self, name: str) -> list[str]:
        """The names of the containers (running or not) that mount the volume `name`."""
        return [c["Names"][0].lstrip("/") for c in self.client.api.containers(all=True, filters={"volume": name})]

    def remove_volume(self, name: str) -> bool:
        """False when it was already gone."""
        try:
            self.client.api.remove_volume(name)
            return True
        except sdk().errors.NotFound:
            return False

    def create_volume(self, name: str, driver: str, options: Mapping[str, str], labels: Mapping[str, str]) -> None:
        self.client.api.create_volume(name, driver=driver, driver_opts=dict(options), labels=dict(labels))

    def exec_output(self, container: str, command: list[str]) -> tuple[int, str]:
        """Run a command in a running container; (exit code, output)."""
        created = self.client.api.exec_create(container, command, stdout=True, stderr=True)
        output = self.client.api.exec_start(created["Id"]).decode(errors="replace")
        return self.client.api.exec_inspect(created["Id"]).get("ExitCode", 1), output


class HubDocker(JobCalls):
    """The backup service's gateway: the Docker socket mounted at its default path."""

    def __init__(self) -> None:
        self.client = sdk().from_env(timeout=600)
