"""The stack, whatever runs it: settings, ports, GPUs, rendering, health, the bootstrap secret, labs,
status and down. An engine (compose.py, swarm.py) says how its stack file is started and removed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hub_ext.backup import plan as backup_plan
from hub_ext.backup import status as backup_status
from hub_ext.helpers.netguard import SYSTEMD_UPSTREAM
from hub_ext.labs.gpu import ALL_GPUS, decide
from hub_ext.labs.networks import NETWORK_ROLE, SANDBOX_ROLE
from hub_ext.monitoring import service_host
from hub_ext.naming import PROJECT_LABEL, QUOTA_LABEL, ROLE_LABEL, USER_LABEL, VOLUME_LABEL
from hub_ext.settings.hub import ConfigError, env_template, from_environ, hub_host, parse_gpu_mode
from hub_ext.settings.schedule import parse_schedule

from .. import __version__
from ..backup.plan import SWARM_REFUSAL, write_password
from ..docker_io import StackDocker
from ..errors import HubforgeError
from ..render import render
from . import monitoring
from .settings import (
    BOOTSTRAP_SECRET,
    HEALTH_TIMEOUT,
    StackOptions,
    config_digest,
    parse_probe,
    port_free,
    read_env_file,
    socket_gid,
    subdomain_dns_problem,
)

log = logging.getLogger(__name__)
HUB_UID = 1000  # the hub's user in its image and stack file
CERTS_DIR = "/srv/jupyterhub/certs"  # the certs volume, in the hub's and the proxy's containers
PROXY_ENV = "proxy.env"  # in the run directory, 0600: the token the hub and its proxy share (CONFIGPROXY_AUTH_TOKEN)


def private_file(path: Path, text: str) -> None:
    """A new file that only its owner can read, from its first byte."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


def front_healthy(details: dict | None) -> bool:
    state = (details or {}).get("State", {})
    return state.get("Status") == "running" and state.get("Health", {}).get("Status", "healthy") == "healthy"


def script_address(bind: str) -> str:
    """Where a script on this machine reaches the hub's published port by address: loopback, unless the port is
    bound to one other address only."""
    if bind in ("0.0.0.0", "::", "127.0.0.1", ""):
        return "127.0.0.1"
    return f"[{bind}]" if ":" in bind else bind


class Stack:
    def __init__(self, options: StackOptions, docker: StackDocker, root: Path, say: Callable[[str], None]) -> None:
        self.options = options
        self.docker = docker
        self.root = root
        self.say = say

    @property
    def state_file(self) -> Path:
        return self.options.run_dir / "stack.json"

    # -- what each engine does its own way -------------------------------------------------------------
    run_file = ""  # the rendered stack file in the run directory
    template = ""  # its template in stack/
    guards_labs = True  # whether this engine runs the network guard (LAB_NETWORK_GUARD)

    def hub_container(self) -> dict | None:
        """The hub's container (summary form, as `docker ps` lists it), or None."""
        raise NotImplementedError

    def start(self, rendered: Mapping[str, Any]) -> None:
        """Start (or update) the stack as `prepare` rendered it; `rendered` is what prepare returned (stack.json)."""
        raise NotImplementedError

    def services(self) -> list[dict[str, Any]]:
        """The stack's own services: service, container, state, health (and node, where there are nodes)."""
        raise NotImplementedError

    def remove(self, volumes: bool) -> None:
        """Remove the stack's services and containers (not the labs); its own volumes only when asked."""
        raise NotImplementedError

    def remove_hub(self) -> None:
        """Stop and remove the hub's container alone (labs and the other services keep running): an upgrade's database
        step, which needs the hub off its database."""
        raise NotImplementedError

    def pause_backups(self) -> None:
        """Freeze the stack's backup service, if it has one, so that it starts no backup (a rollback replaces the
        volume a backup reads); resume_backups thaws it."""

    def resume_backups(self) -> None:
        """Thaw what pause_backups froze."""

    def remove_labs(self) -> list[str]:
        """Remove every user's lab (never their volumes); returns what went."""
        removed = []
        for lab in self.lab_containers():
            self.docker.remove_container(lab["Id"])
            removed.append(lab["Names"][0].lstrip("/"))
        return removed

    def engine_variables(self) -> dict[str, Any]:
        """Template variables only this engine needs."""
        return {}

    def engine_state(self) -> dict[str, Any]:
        """What `invoke status` shows about this engine (nodes, for Swarm)."""
        return {}

    def distribute(
        self, images: Mapping[str, str], lab_images: Mapping[str, str], status: Callable[[str], None]
    ) -> None:
        """Make the built images available wherever labs may run (a registry, for Swarm); one host needs nothing."""

    # -- shared --------------------------------------------------------------------------------------------

    def proxy_container(self) -> dict | None:
        """The proxy's own container (None: the proxy runs in the hub's, as in a stack from before it had one)."""
        return None

    def front_container(self) -> dict | None:
        """The container that publishes the stack's ports: the proxy's, or the hub's."""
        return self.proxy_container() or self.hub_container()

    def check_ports(self) -> None:
        front = self.front_container()
        ours = set()
        if front and front.get("State") == "running":
            ours = {p.get("PublicPort") for p in front.get("Ports", [])}
        for flag, port in (("--port", self.options.https_port), ("--http-port", self.options.http_port)):
            if port not in ours and not port_free(self.options.bind, port):
                raise HubforgeError(
                    f"port {port} on {self.options.bind} is already in use; choose another with {flag} (nothing was "
                    "started)"
                )

    def proxy_token(self) -> None:
        """The proxy's API token, made once at the first `up` (private from its first byte) and kept: a proxy
        left running across `up` keeps answering the hub that replaces the old one."""
        path = self.options.run_dir / PROXY_ENV
        if not path.exists():
            private_file(path, f"CONFIGPROXY_AUTH_TOKEN={secrets.token_hex(32)}\n")

    def settings(self) -> tuple[dict[str, str], Any]:
        """The .env values, created with a fresh metrics token on the first `up`, and checked."""
        env_path = self.options.run_dir / ".env"
        if not env_path.exists():  # private from its first byte: it holds the metrics token
            with os.fdopen(os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as env_file:
                env_file.write(env_template(secrets.token_hex(24)))
        values = read_env_file(env_path)
        if self.options.gpu is not None:
            values["ENABLE_GPU_SUPPORT"] = self.options.gpu
        if self.options.monitoring:
            values["MONITORING"] = "1"
        try:
            return values, from_environ(values)
        except ConfigError as exc:
            raise HubforgeError(f"{env_path}: {exc}") from None

    def probe_gpu(self, mode: str, probe_image: str) -> dict[str, Any] | None:
        if mode != "auto":
            return None
        self.say("probing for GPUs (gpu-probe with a GPU device request)")
        return parse_probe(*self.docker.run_gpu_probe(probe_image, [dict(ALL_GPUS)]))

    def render(self, variables: Mapping[str, Any]) -> None:
        run_dir = self.options.run_dir
        (run_dir / "config.d").mkdir(parents=True, exist_ok=True)
        hub_config = (self.root / "stack" / "jupyterhub_config.py").read_text()
        (run_dir / "jupyterhub_config.py").write_text(hub_config)
        template = (self.root / "stack" / self.template).read_text()
        variables = {
            **variables,
            **self.engine_variables(),
            "engine": self.options.engine,
            "config_digest": config_digest(hub_config, run_dir / "config.d"),
        }
        (run_dir / self.run_file).write_text(render({self.template: template}, self.template, variables))

    def prepare(self, images: Mapping[str, str], lab_images: Mapping[str, str]) -> dict[str, Any]:
        """Check settings and ports, probe GPUs, render the run directory. Starts nothing."""
        options = self.options
        options.run_dir.mkdir(parents=True, exist_ok=True)
        values, hub = self.settings()
        gpu_mode = parse_gpu_mode(values.get("ENABLE_GPU_SUPPORT", "auto"))
        if hub.lab_subdomains:
            problem = subdomain_dns_problem(hub_host(hub))
            if problem:
                raise HubforgeError(f"{problem} (nothing was started)")
        self.check_ports()
        self.proxy_token()
        profile = self.monitoring_service(hub, images)
        probe = self.probe_gpu(gpu_mode, images["gpu-probe"])
        decision = decide(gpu_mode, probe)
        guarded = hub.lab_network_guard and self.guards_labs
        if hub.lab_network_guard and not guarded:
            self.say(
                f"note: the {options.engine} engine runs no network guard yet: labs can reach private and "
                "link-local addresses (the cloud's metadata service included) unless the nodes' firewalls block them"
            )
        self.render(
            {
                "run_dir": str(options.run_dir),
                "project": options.project,
                "hub_image": images["hub"],
                "proxy_image": images.get("proxy", ""),
                "lab_subdomains": hub.lab_subdomains,
                # the proxy serves it; without SSL_CERT the hub makes a self-signed pair there
                "ssl_cert": hub.ssl_cert or f"{CERTS_DIR}/tls.crt",
                "ssl_key": hub.ssl_key or f"{CERTS_DIR}/tls.key",
                "registry_image": images.get("registry", ""),
                "lab_images": dict(lab_images),
                "network": f"{options.project}_net",
                "shared_volume": f"{options.project}_shared",
                "volume_prefix": options.volume_prefix,
                "docker_gid": socket_gid(options.docker_socket),
                "docker_socket": options.docker_socket,
                "https_port": options.https_port,
                "http_port": options.http_port,
                "bind": options.bind,
                "gpu_mode": gpu_mode,
                "gpu_probe": probe,
                "base_url": hub.base_url,
                "hub_mem_limit": hub.hub_mem_limit,
                "hub_cpus": min(hub.hub_cpu_limit, float(self.docker.cpu_count())),
                "hub_pids_limit": hub.hub_pids_limit,
                "network_guard": guarded,
                "lab_subnet_pool": hub.lab_subnet_pool,
                "lab_allowed_ranges": list(hub.lab_allowed_ranges),
                # the guard reads the labs' resolvers from it (hub_ext.helpers.netguard)
                "systemd_resolved": SYSTEMD_UPSTREAM.exists(),
                "log_max_size": hub.log_max_size,
                "log_max_files": hub.log_max_files,
                "oidc_secret": self.oidc_secret(hub),
                "backup": self.backup_service(hub, images),
                "monitoring": profile,
            }
        )
        host = hub_host(hub)
        port = "" if options.https_port == 443 else f":{options.https_port}"
        state = {
            "project": options.project,
            "engine": options.engine,
            "url": f"https://{host}{port}{hub.base_url}",
            "https_port": options.https_port,
            "http_port": options.http_port,
            "admin": hub.admin,
            "signup": hub.enable_signup,
            "authenticator": hub.authenticator,
            "network_guard": guarded,
            "lab_origin": f"https://<user>.{host}{port}/"
            if hub.lab_subdomains
            else "shared with the hub (LAB_SUBDOMAINS=0)",
            # for scripts' token calls: an address, which needs no resolver for *.localhost (the certificate names it)
            "api_url": f"https://{script_address(options.bind)}{port}{hub.base_url}hub/api/",
            "gpu": decision.as_dict(),
            "images": dict(images),
            "lab_images": dict(lab_images),
            "run_dir": str(options.run_dir),
            # what `invoke upgrade` starts it with again, whatever its own flags
            "bind": options.bind,
            "volume_prefix": options.volume_prefix,
            "registry_port": options.registry_port,
            "routing_mesh": options.routing_mesh,
        }
        if profile:
            state["prometheus"] = profile["external_url"]  # for hub admins, through the hub's login
        if hub.backup_schedule != "off":
            state["backups"] = {"schedule": parse_schedule("BACKUP_SCHEDULE", hub.backup_schedule).describe()}
        if hub.oidc:  # what the provider needs to know; never the client secret
            state["oidc"] = {
                "issuer": hub.oidc.issuer,
                "client_id": hub.oidc.client_id,
                "who_gets_in": hub.oidc.who_gets_in,
                "redirect_uri": f"{state['url']}hub/oauth_callback",
                "post_logout_redirect_uri": state["url"] if hub.oidc.logout_provider else None,
            }
        previous = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        if "bootstrap_shown" in previous:  # the secret was printed by an earlier `up`: not again
            state["bootstrap_shown"] = previous["bootstrap_shown"]
        self.state_file.write_text(json.dumps(state, indent=1))
        return state

    def backup_service(self, hub, images: Mapping[str, str]) -> dict[str, Any] | None:
        """The backup service's settings (hub_ext.backup.scheduler), with BACKUP_SCHEDULE on: the host's paths of the
        repository and its password (made here at its default place, as `invoke backup` does), the retention, the
        backup image. None when the schedule is off, or on an engine that cannot back up yet (said once)."""
        if hub.backup_schedule == "off":
            return None
        if self.options.engine == "swarm":
            self.say(f"note: BACKUP_SCHEDULE is ignored: {SWARM_REFUSAL}")
            return None
        repo = backup_plan.repository(
            hub.backup_repository, hub.backup_password_file, self.options.project, self.options.run_dir
        )
        if repo.password_is_default and not repo.password_file.is_file():
            write_password(repo.password_file)
            self.say(f"made the backup repository's password in {repo.password_file}: keep a copy somewhere else")
        elif not repo.password_file.is_file():
            raise HubforgeError(
                f"BACKUP_SCHEDULE is on but there is no password file at {repo.password_file} (BACKUP_PASSWORD_FILE); "
                "create it (nothing was started)"
            )
        if repo.local:  # made here, private; else Docker would make the missing bind source
            Path(repo.location).mkdir(parents=True, exist_ok=True, mode=0o700)
        return {
            "project": self.options.project,
            "engine": self.options.engine,
            "image": images["backup"],
            "version": __version__,
            "repository": repo.location,
            "password_file": str(repo.password_file.resolve()),
            "run_dir": str(self.options.run_dir.resolve()),
            "state_volume": f"{self.options.project}_{backup_plan.STATE_VOLUME}",
            "schedule": hub.backup_schedule,
            "keep": {
                "daily": hub.backup_keep_daily,
                "weekly": hub.backup_keep_weekly,
                "monthly": hub.backup_keep_monthly,
            },
        }

    def monitoring_service(self, hub, images: Mapping[str, str]) -> dict[str, Any] | None:
        """The monitoring profile's settings (MONITORING on), its files written into the run folder; None when it is
        off, or on an engine that cannot run it yet (said once)."""
        if not hub.monitoring:
            return None
        if self.options.engine == "swarm":
            self.say("note: MONITORING is ignored: the monitoring profile runs on the compose engine only, for now")
            return None
        if "monitoring" not in images:
            raise HubforgeError(
                "MONITORING is on but there is no monitoring image; run `invoke build --target monitoring` "
                "(nothing was started)"
            )
        prefix = monitoring.route_prefix(hub.base_url)
        return {
            "image": images["monitoring"],
            "retention": hub.monitoring_retention,
            "route_prefix": prefix,
            "external_url": f"{self.service_origin(hub, monitoring.SERVICE_NAME)}{prefix}",
            "digest": monitoring.write_files(
                self.root, self.options.run_dir, hub.base_url, hub.monitoring_interval, hub.metrics_token
            ),
        }

    def service_origin(self, hub, name: str) -> str:
        """Where browsers reach a hub service: its own subdomain when labs have theirs (JupyterHub's rule)."""
        host = hub_host(hub)
        if hub.lab_subdomains:
            host = service_host(name, host)
        return f"https://{host}" + ("" if self.options.https_port == 443 else f":{self.options.https_port}")

    def backup_status(self) -> dict[str, Any]:
        """The backup service's status file, read through the hub's container (which mounts its volume read-only):
        no host permissions needed. {} when the hub is not running or nothing was written yet."""
        hub = self.hub_container()
        if not hub or hub.get("State") != "running":
            return {}
        code, output = self.docker.exec_output(
            hub["Id"], ["cat", f"{backup_plan.STATE_MOUNT}/{backup_plan.STATUS_FILE}"]
        )
        return backup_status.parse(output) if code == 0 else {}

    def oidc_secret(self, hub) -> dict[str, str] | None:
        """OIDC_CLIENT_SECRET_FILE, mounted into the hub as a secret: its path on this host, and a name that changes
        with
        its contents (a swarm secret cannot be changed in place). The hub runs as uid 1000 and must be able to read
        it."""
        path = hub.oidc.secret_file if hub.oidc else ""
        if not path:
            return None
        if hub.oidc.secret_warning:  # used all the same; the hub's log says it too
            self.say(f"warning: {hub.oidc.secret_warning}")
        info = os.stat(path)  # readable: from_environ read it a moment ago
        if self.options.engine == "compose" and not (
            info.st_uid == HUB_UID or info.st_mode & 0o004 or (info.st_gid == HUB_UID and info.st_mode & 0o040)
        ):
            raise HubforgeError(
                f"OIDC_CLIENT_SECRET_FILE={path} is not readable by the hub (uid {HUB_UID}), which reads it "
                f"where it is: run `chown {HUB_UID} {path} && chmod 0400 {path}` (nothing was started)"
            )
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        return {"file": str(Path(path).resolve()), "name": f"{self.options.project}_oidc_client_secret_{digest}"}

    def up(
        self, images: Mapping[str, str], lab_images: Mapping[str, str], status: Callable[[str], None]
    ) -> dict[str, Any]:
        state = self.prepare(images, lab_images)
        try:
            self.start(state)
        except HubforgeError:
            self.explain_guard()
            raise
        self.distribute(images, lab_images, status)
        self.wait_healthy(status, image=images["hub"])  # on Swarm the old hub answers until the new one replaces it
        secret = self.bootstrap_secret()
        state["admin_unclaimed"] = secret is not None
        if secret is not None:
            digest = hashlib.sha256(secret.encode()).hexdigest()
            if (
                state.get("bootstrap_shown") != digest
            ):  # shown once, like an unlock key; it stays readable in the data volume
                state["bootstrap_secret"] = secret
            state["bootstrap_shown"] = digest
            self.state_file.write_text(
                json.dumps({k: v for k, v in state.items() if k != "bootstrap_secret"}, indent=1)
            )
        return state

    def explain_guard(self) -> None:
        """When the network guard could not start, its own line says why (Compose only says it exited)."""
        for guard in self.docker.containers({PROJECT_LABEL: self.options.project, ROLE_LABEL: "netguard"}):
            if guard.get("State") in ("exited", "dead", "restarting"):
                last = (self.docker.logs(guard["Id"], tail=1).strip() or "(no output)").removeprefix(
                    "hubforge-netguard: "
                )
                raise HubforgeError(f"the network guard did not start: {last} (`invoke logs netguard` has the rest)")

    def bootstrap_secret(self) -> str | None:
        """The admin's one-time signup secret while the admin is unclaimed, read from the running hub."""
        hub = self.hub_container()
        if not hub or hub.get("State") != "running":
            return None
        code, output = self.docker.exec_output(hub["Id"], ["cat", BOOTSTRAP_SECRET])
        return output.strip() if code == 0 and output.strip() else None

    def wait_healthy(
        self, status: Callable[[str], None], timeout: float = HEALTH_TIMEOUT, image: str | None = None
    ) -> None:
        """Until the hub runs and is healthy; with `image`, until a hub of that image does. Compose has made the new
        hub when `up` returns, Swarm only some time after `stack deploy` does: until then the old hub may still
        answer, healthy, and whatever checked it would check the wrong hub. A hub of another image is no hub here (its
        exit is the old one going)."""
        started = time.monotonic()
        wanted = self.docker.image_id(image) if image else None
        while True:
            hub = self.hub_container()
            if hub and image and hub.get("Image") != image and not (wanted and hub.get("ImageID") == wanted):
                hub = None
            details = self.docker.inspect_container(hub["Id"]) if hub else None
            state = (details or {}).get("State", {})
            health = state.get("Health", {}).get("Status", "starting")
            elapsed = time.monotonic() - started
            if state.get("Status") == "running" and health == "healthy":
                proxy = self.proxy_container()
                if not proxy or front_healthy(self.docker.inspect_container(proxy["Id"])):
                    return
                health = "healthy; the proxy is not yet"
            elif details and (state.get("Status") in ("exited", "dead") or state.get("Restarting")):
                tail = self.docker.logs(hub["Id"], tail=15).strip()
                raise HubforgeError(f"the hub stopped while starting; its last lines:\n{tail}\n(see `invoke logs hub`)")
            if elapsed > timeout:
                if image and not hub:
                    raise HubforgeError(f"no hub of {image} ran within {timeout:.0f}s")
                tail = self.docker.logs(hub["Id"], tail=15).strip() if hub else "(no hub container)"
                raise HubforgeError(
                    f"the hub was not healthy after {timeout:.0f}s (state {health}); last lines:\n{tail}"
                )
            if image and not hub:
                status(f"waiting for the hub of {image} to run ({elapsed:.0f}s)")
            else:
                status(f"waiting for the hub to become healthy ({health}, {elapsed:.0f}s)")
            time.sleep(1)

    def lab_containers(self) -> list[dict]:
        return [
            c
            for c in self.docker.containers({PROJECT_LABEL: self.options.project})
            if c.get("Labels", {}).get(USER_LABEL)
        ]

    def lab_logs_argv(self, name: str, follow: bool, tail: int) -> list[str] | None:
        """`docker logs` of the lab of user `name` (or of the container so named), wherever it runs; None if none."""
        for lab in self.lab_containers():
            if name in (lab["Labels"].get(USER_LABEL), lab["Names"][0].lstrip("/")):
                return ["docker", "logs", f"--tail={tail}", *(["--follow"] if follow else []), lab["Id"]]
        return None

    def lab_users(self) -> list[str]:
        """Users whose lab exists, on any node."""
        return sorted({lab["Labels"].get(USER_LABEL, "?") for lab in self.lab_containers()})

    def down(self, volumes: bool, user_volumes: bool) -> list[str]:
        """Stop and remove the stack's containers (labs too); volumes only when asked. Returns what went."""
        removed = self.remove_labs()
        self.remove(volumes)
        for sandbox in self.docker.containers({PROJECT_LABEL: self.options.project, ROLE_LABEL: SANDBOX_ROLE}):
            self.docker.remove_container(sandbox["Id"])  # off the lab networks first
        for network in self.docker.networks({PROJECT_LABEL: self.options.project, ROLE_LABEL: NETWORK_ROLE}):
            if self.docker.remove_network(network["Id"]):
                removed.append(network["Name"])
        if volumes:
            quota_files = []
            for volume in self.docker.volumes({PROJECT_LABEL: self.options.project}):
                kind = volume.get("Labels", {}).get(VOLUME_LABEL)
                is_user = bool(volume.get("Labels", {}).get(USER_LABEL)) or kind == "group"  # people's files
                if (is_user and user_volumes) or (not is_user and kind):
                    if self.docker.remove_volume(volume["Name"]):
                        removed.append(volume["Name"])
                        device = (volume.get("Options") or {}).get("device", "")
                        if volume.get("Labels", {}).get(QUOTA_LABEL) and device.endswith(".dev"):
                            quota_files.append(device)
            if quota_files:
                self.remove_quota_files(quota_files)
        return removed

    def remove_quota_files(self, devices: list[str]) -> None:
        """The files and loop devices that held removed quota'd volumes (group policies' quotas) go too."""
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        image = (state.get("images") or {}).get("hub")
        folder = os.path.dirname(devices[0])
        if not image:
            self.say(f"[yellow]the files of {len(devices)} quota'd volumes stay in {folder}: no hub image is known[/]")
            return
        code, out = self.docker.remove_quota_files(image, folder, devices)
        if code != 0:
            self.say(f"[yellow]the files of quota'd volumes in {folder} were not all removed: {out.strip()[-300:]}[/]")
            return
        # the helper cannot remove the folder it has mounted; emptied, it goes from here (a folder made by another
        # user, or still holding another volume's files, stays)
        with contextlib.suppress(OSError):
            Path(folder).rmdir()

    def status(self) -> dict[str, Any]:
        state: dict[str, Any] = (
            json.loads(self.state_file.read_text()) if self.state_file.exists() else {"project": self.options.project}
        )
        services = self.services()
        labs = []
        for container in self.lab_containers():
            details = self.docker.inspect_container(container["Id"]) or {}
            labs.append(
                {
                    "user": container["Labels"].get(USER_LABEL),
                    "container": container["Names"][0].lstrip("/"),
                    "image": container.get("Image"),
                    "state": container.get("State"),
                    "health": details.get("State", {}).get("Health", {}).get("Status"),
                    "device_requests": (details.get("HostConfig") or {}).get("DeviceRequests") or [],
                }
            )
        state["services"] = services
        state.update(self.engine_state())
        state["labs"] = labs
        state["admin_unclaimed"] = self.bootstrap_secret() is not None
        state.pop("bootstrap_shown", None)
        state["running"] = any(s["service"] == "hub" and s["state"] == "running" for s in services)
        if "backups" in state:
            state["backups"].update(self.backup_status())
        return state
