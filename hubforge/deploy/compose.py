"""The compose engine: the rendered compose.yml, started with Compose v2 on this one host."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import proc
from .engine import Stack

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"


def compose_files(run_dir: Path) -> list[Path]:
    files = [run_dir / "compose.yml"]
    if (run_dir / "compose.override.yml").exists():
        files.append(run_dir / "compose.override.yml")
    return files


def compose_argv(project: str, run_dir: Path, *args: str) -> list[str]:
    argv = ["docker", "compose", "--project-name", project, "--project-directory", str(run_dir)]
    for path in compose_files(run_dir):
        argv += ["--file", str(path)]
    return argv + list(args)


class ComposeStack(Stack):
    run_file = "compose.yml"
    template = "compose.yml.j2"

    def compose(self, *args: str) -> list[str]:
        return compose_argv(self.options.project, self.options.run_dir, *args)

    def hub_container(self) -> dict | None:
        found = self.docker.containers({PROJECT: self.options.project, SERVICE: "hub"})
        return found[0] if found else None

    def proxy_container(self) -> dict | None:
        found = self.docker.containers({PROJECT: self.options.project, SERVICE: "proxy"})
        return found[0] if found else None

    def start(self, rendered: Mapping[str, Any]) -> None:
        """`compose up`, the network guard first when the stack has one: Compose would otherwise stop the hub, then
        recreate the guard and wait for its health check (some 2.5 s) before it starts the hub again -- time in which
        nobody reaches the hub or a lab. Recreated on its own, the guard is replaced while the old hub still serves."""
        hub = self.hub_container()
        if rendered.get("network_guard") and hub:
            proc.run(
                self.compose("up", "--detach", "--no-deps", "--wait", "--wait-timeout", "60", "netguard"),
                what="docker compose up netguard",
            )
        if hub and not self.proxy_container():
            # A stack from before the proxy had its own container: its hub holds the ports the proxy takes now. The
            # hub goes first (labs keep running; it is made again in the proxy's namespace a moment later).
            self.remove_hub()
        proc.run(self.compose("up", "--detach", "--remove-orphans"), what="docker compose up")

    def remove_hub(self) -> None:
        proc.run(self.compose("rm", "--stop", "--force", "hub"), what="docker compose rm hub")

    def pause_backups(self) -> None:
        if self.docker.containers({PROJECT: self.options.project, SERVICE: "backup"}, all=False):
            proc.run(self.compose("pause", "backup"), what="docker compose pause backup")

    def resume_backups(self) -> None:
        found = self.docker.containers({PROJECT: self.options.project, SERVICE: "backup"}, all=False)
        if any(c.get("State") == "paused" for c in found):
            proc.run(self.compose("unpause", "backup"), what="docker compose unpause backup")

    def remove(self, volumes: bool) -> None:
        if (self.options.run_dir / self.run_file).exists():
            proc.run(
                self.compose("down", "--remove-orphans", *(["--volumes"] if volumes else [])),
                what="docker compose down",
            )
        else:
            for container in self.docker.containers({PROJECT: self.options.project}):
                self.docker.remove_container(container["Id"])

    def services(self) -> list[dict[str, Any]]:
        services = []
        for container in self.docker.containers({PROJECT: self.options.project}):
            details = self.docker.inspect_container(container["Id"]) or {}
            services.append(
                {
                    "service": container["Labels"].get(SERVICE),
                    "container": container["Names"][0].lstrip("/"),
                    "state": container.get("State"),
                    "health": details.get("State", {}).get("Health", {}).get("Status"),
                }
            )
        return services

    def logs_argv(self, service: str | None, follow: bool, tail: int) -> list[str]:
        argv = self.compose("logs", f"--tail={tail}") + (["--follow"] if follow else [])
        return argv + ([service] if service else [])
