"""A live hubforge stack for the integration and e2e tiers: unique project, free ports, full cleanup."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
from prometheus_client.parser import text_string_to_metric_families
from testcontainers.compose import DockerCompose

from hubforge.deploy import PROJECT_LABEL, StackOptions, open_stack
from hubforge.deploy.compose import compose_files
from hubforge.deploy.engine import Stack
from hubforge.docker_io import Docker, StackDocker
from hubforge.imagebuild.builder import Builder, Settings
from hubforge.imagebuild.targets import DEFAULT_SET, Graph

from . import localdns
from .hubclient import HubAPI, HubSession, plain_get

localdns.install()  # stacks are reached at hub.localhost and labs at <user>.hub.localhost, as browsers do

ROOT = Path(__file__).resolve().parents[2]  # tests/support/livestack.py -> the repository
ADMIN = "admin"
PASSWORD = "a-Long-passw0rd!"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def built_refs(targets: list, command: str = "invoke build") -> dict[str, str]:
    """target name -> ref of its current key; fails, naming `command`, when one is not built."""
    settings = Settings(root=ROOT, cache_dir=Path(os.path.expanduser("~/.cache/hubforge")))
    steps = Builder(settings, Docker(), say=lambda message: None).plan(targets)
    missing = [s.ref for s in steps if not s.exists]
    assert not missing, f"images for the current keys are missing: {missing}; run `{command}`"
    return {s.target.name: s.ref for s in steps}


def current_images() -> tuple[dict[str, str], dict[str, str]]:
    """The refs of the current keys (built by `invoke build`), and the stack's lab image choices."""
    images = built_refs(Graph().closure(list(DEFAULT_SET)))
    return images, {"default": images["lab"]}


def flavour_image(flavor: str) -> str:
    """The ref of a lab flavour's current key (built by `invoke build --target lab --flavor NAME`)."""
    return built_refs(Graph().select("lab", flavor), f"invoke build --target lab --flavor {flavor}")[f"lab-{flavor}"]


@dataclass
class LiveStack:
    stack: Stack
    compose: DockerCompose | None  # None: the swarm engine, deployed and removed by the stack itself
    url: str
    http_url: str

    @property
    def project(self) -> str:
        return self.stack.options.project

    def containers(self) -> list:
        return docker.from_env().containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"})

    def bootstrap_secret(self) -> str | None:
        return self.stack.bootstrap_secret()

    def hub(self):
        return docker.from_env().containers.get(self.stack.hub_container()["Id"])

    def hub_network_holder(self):
        """The container whose networks the hub is on: the proxy's, whose namespace the hub joins (Compose), or the
        hub's own."""
        hub = self.hub()
        mode = hub.attrs["HostConfig"]["NetworkMode"]
        return docker.from_env().containers.get(mode.split(":", 1)[1]) if mode.startswith("container:") else hub

    def lab(self, username: str):
        from hub_ext.naming import user_names

        if self.stack.options.engine == "swarm":  # a task's container: <service>.1.<task id>, found by its labels
            found = docker.from_env().containers.list(
                filters={"label": [f"{PROJECT_LABEL}={self.project}", f"hubforge.user={username}"]}
            )
            if not found:
                raise docker.errors.NotFound(f"no running lab of {username}")
            return found[0]
        return docker.from_env().containers.get(user_names(self.stack.options.volume_prefix, username).container)

    def metrics_token(self) -> str:
        env = (self.stack.options.run_dir / ".env").read_text().splitlines()
        return next(line.split("=", 1)[1] for line in env if line.startswith("JUPYTERHUB_METRICS_TOKEN="))

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /hub/metrics (0 when the hub has not recorded it), read with the scrape token."""
        scraped = plain_get(self.url + "hub/metrics", headers={"Authorization": f"token {self.metrics_token()}"})
        scraped.raise_for_status()
        for family in text_string_to_metric_families(scraped.text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def dump_logs(self, folder: Path, tail: int | str = 500) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        client = docker.from_env()
        for container in (
            client.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.project}"})
            + self.containers()
        ):
            (folder / f"{container.name}.log").write_bytes(container.logs(tail=tail))


def start_stack(
    tmp: Path,
    env: dict[str, str] | None = None,
    extra_lab_images: dict[str, str] | None = None,
    volume_prefix: str | None = None,
    engine: str = "compose",
    before: Callable[[StackOptions], None] | None = None,
) -> LiveStack:
    """A stack of the current images; `extra_lab_images` adds choices to the spawn page's image picker;
    `volume_prefix` "" takes the prefix `invoke up` would choose for the project; `before` writes more files into
    the run folder (a compose.override.yml) once the ports are chosen. On the swarm engine the ports are published
    on every address (its routing mesh binds no single one); the tests still reach them on loopback."""
    project = f"hft{secrets.token_hex(3)}"
    options = StackOptions(
        project=project,
        run_dir=tmp / project,
        https_port=free_port(),
        http_port=free_port(),
        bind="127.0.0.1" if engine == "compose" else "0.0.0.0",
        engine=engine,
        volume_prefix=f"{project}-lab" if volume_prefix is None else volume_prefix,
        registry_port=free_port(),
        routing_mesh="off",
    )
    options.run_dir.mkdir(parents=True)
    lines = [f"JUPYTERHUB_ADMIN={ADMIN}"] + [f"{k}={v}" for k, v in (env or {}).items()]
    (options.run_dir / ".env").write_text("\n".join(lines) + f"\nJUPYTERHUB_METRICS_TOKEN={secrets.token_hex(16)}\n")
    if before is not None:
        before(options)
    stack = open_stack(options, StackDocker(), ROOT, say=lambda message: None)
    images, lab_images = current_images()
    rendered = stack.prepare(images, {**lab_images, **(extra_lab_images or {})})
    files = [path.name for path in compose_files(options.run_dir)]  # compose.override.yml too, as `invoke up` does
    compose = (
        None
        if engine != "compose"
        else DockerCompose(options.run_dir, compose_file_name=files, wait=True, keep_volumes=False)
    )
    # Reached by name, as a browser would: with subdomains (the default) labs live at <user>.hub.localhost
    host = "127.0.0.1" if (env or {}).get("LAB_SUBDOMAINS") == "0" else "hub.localhost"
    live = LiveStack(stack, compose, f"https://{host}:{options.https_port}/", f"http://{host}:{options.http_port}/")
    try:
        if compose is None:
            stack.start(rendered)
            stack.distribute(images, {**lab_images, **(extra_lab_images or {})}, lambda message: None)
            stack.wait_healthy(lambda message: None)
        else:
            compose.start()
    except Exception:
        stop_stack(live)
        raise
    return live


def stop_stack(live: LiveStack) -> None:
    """Remove everything the stack made: labs, hub, network and every volume with its project label."""
    live.stack.down(volumes=True, user_volumes=True)
    if live.compose is not None:
        live.compose.stop(down=True)
    client = docker.from_env()
    for container in live.containers():
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": f"{PROJECT_LABEL}={live.project}"}):
        volume.remove(force=True)


def run_invoke(live: LiveStack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`invoke ARGS --project <the stack's>` as a user types it, with the stack's run folder's parent as stack_dir."""
    return invoke_for(live.project, live.stack.options.run_dir.parent, *args, timeout=timeout)


def invoke_for(project: str, stack_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`invoke ARGS --project PROJECT` with `stack_dir` as hubforge.stack_dir: its output, never raising."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args, "--project", project],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "INVOKE_HUBFORGE_STACK_DIR": str(stack_dir)},
    )


def claim_admin(live: LiveStack) -> HubSession:
    """The admin's session: signs the admin up with the bootstrap secret unless that already happened."""
    session = HubSession(live.url)
    if session.login(ADMIN, PASSWORD).status_code != 302:
        session.signup(ADMIN, PASSWORD, bootstrap_secret=live.bootstrap_secret() or "")
        assert session.login(ADMIN, PASSWORD).status_code == 302, "the admin cannot log in"
    return session


def admin_api(live: LiveStack, admin: HubSession) -> HubAPI:
    """The admin's token API (for the REST calls a script would make)."""
    return HubAPI(live.url, admin.new_token(ADMIN))


def approved_user(live: LiveStack, admin: HubSession, name: str) -> tuple[HubSession, HubAPI]:
    """A user who signed up and was approved: their cookie session and a token API."""
    session = HubSession(live.url)
    session.signup(name, PASSWORD)
    admin.approve(name)
    assert session.login(name, PASSWORD).status_code == 302, f"{name} cannot log in"
    return session, HubAPI(live.url, session.new_token(name))


def setting(raw: str) -> tuple[str, str]:
    """A benchmark's `--env KEY=VALUE`, parsed (argparse's type)."""
    import argparse

    key, sep, value = raw.partition("=")
    if not sep or not key or not key.isupper():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. LAB_MEM_LIMIT=2G), got {raw!r}")
    return key, value
