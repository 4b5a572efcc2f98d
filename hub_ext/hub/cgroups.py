"""A container's CPU and memory, read from the host's cgroup files (mounted read-only into the hub), for the activity
collector (hub_ext.hub.activity): no Docker call per lab, just two or three small files.

Docker puts a container's cgroup in one of four places, by the cgroup version and the cgroup driver:

- v1, cgroupfs driver: `cpuacct/docker/<id>/cpuacct.usage` (ns) and `memory/docker/<id>/memory.usage_in_bytes`;
- v1, systemd driver: the same files under `cpuacct/system.slice/docker-<id>.scope/` and `memory/system.slice/...`;
- v2, systemd driver: `system.slice/docker-<id>.scope/cpu.stat` (usage_usec) and `.../memory.current`;
- v2, cgroupfs driver: `docker/<id>/cpu.stat` and `docker/<id>/memory.current`.

Kills for memory come from v2's `memory.events` (`oom_kill`) or v1's `memory.oom_control` (`oom_kill`, Linux 4.13+);
a container whose main process was killed is gone with its cgroup, but a lab's kernel is a child: the lab lives on.

Memory is reported as `docker stats` does: the usage minus the inactive file cache (`total_inactive_file` in v1's
memory.stat, `inactive_file` in v2's), which the kernel reclaims before it would kill the lab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNLIMITED_V1 = 1 << 62  # v1 writes a huge number (PAGE_COUNTER_MAX pages) for "no limit"; anything above this is none


@dataclass(frozen=True)
class Reading:
    """One look at a container's cgroup: CPU time used since it started, and memory now."""

    cpu_ns: int
    memory_bytes: int
    memory_limit: int | None  # None: no limit
    oom_kills: int = 0  # processes the kernel killed in it at its memory limit (memory.events, memory.oom_control)


def _stat(text: str) -> dict[str, int]:
    """`key value` lines (cpu.stat, memory.stat) as a mapping; lines that are not two fields are skipped."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            found[parts[0]] = int(parts[1])
    return found


def _limit(raw: str) -> int | None:
    raw = raw.strip()
    if not raw or raw == "max" or not raw.isdigit() or int(raw) >= UNLIMITED_V1:
        return None
    return int(raw)


def v1_dirs(root: Path, container_id: str) -> list[tuple[Path, Path]]:
    """(cpuacct dir, memory dir) candidates of a container under cgroup v1, cgroupfs driver first."""
    return [
        (root / "cpuacct" / "docker" / container_id, root / "memory" / "docker" / container_id),
        (
            root / "cpuacct" / "system.slice" / f"docker-{container_id}.scope",
            root / "memory" / "system.slice" / f"docker-{container_id}.scope",
        ),
    ]


def v2_dirs(root: Path, container_id: str) -> list[Path]:
    """The container's cgroup directory candidates under cgroup v2 (the unified tree), systemd driver first."""
    return [root / "system.slice" / f"docker-{container_id}.scope", root / "docker" / container_id]


def cpu_dirs(root: Path) -> dict[str, Path]:
    """Every container's CPU accounting directory under `root`, by container id, whichever layout the host has (for
    benchmarks/load.py, which reads the processes of each lab): `cpuacct.usage` is in it under v1, `cpu.stat` under v2,
    and `cgroup.procs` under both."""
    found = {}
    for parent in (
        root / "cpuacct" / "docker",
        root / "cpuacct" / "system.slice",
        root / "docker",
        root / "system.slice",
    ):
        for directory in parent.glob("*") if parent.is_dir() else ():
            name = directory.name.removeprefix("docker-").removesuffix(".scope")
            if len(name) == 64 and directory.is_dir():
                found.setdefault(name, directory)
    return found


def pids(directory: Path) -> list[int]:
    """The processes in a cgroup directory now (none when it is gone: its container stopped meanwhile)."""
    try:
        return [int(line) for line in (directory / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _oom_kills(path: Path) -> int:
    """`oom_kill` of memory.events (v2) or memory.oom_control (v1); 0 where the kernel does not count them."""
    try:
        return _stat(path.read_text()).get("oom_kill", 0)
    except OSError:
        return 0


def read_v1(cpu_dir: Path, memory_dir: Path) -> Reading:
    memory = int((memory_dir / "memory.usage_in_bytes").read_text())
    inactive = _stat((memory_dir / "memory.stat").read_text()).get("total_inactive_file", 0)
    return Reading(
        cpu_ns=int((cpu_dir / "cpuacct.usage").read_text()),
        memory_bytes=memory - inactive if inactive < memory else memory,
        memory_limit=_limit((memory_dir / "memory.limit_in_bytes").read_text()),
        oom_kills=_oom_kills(memory_dir / "memory.oom_control"),
    )


def read_v2(directory: Path) -> Reading:
    memory = int((directory / "memory.current").read_text())
    inactive = _stat((directory / "memory.stat").read_text()).get("inactive_file", 0)
    return Reading(
        cpu_ns=_stat((directory / "cpu.stat").read_text())["usage_usec"] * 1000,
        memory_bytes=memory - inactive if inactive < memory else memory,
        memory_limit=_limit((directory / "memory.max").read_text()),
        oom_kills=_oom_kills(directory / "memory.events"),
    )


def read(root: Path, container_id: str) -> Reading | None:
    """The container's reading from the cgroup tree mounted at `root`, whichever layout it has; None when it has no
    cgroup there (it runs on another node, it stopped meanwhile, or the tree is not mounted)."""
    for cpu_dir, memory_dir in v1_dirs(root, container_id):
        if (cpu_dir / "cpuacct.usage").is_file():
            try:
                return read_v1(cpu_dir, memory_dir)
            except (OSError, ValueError):
                return None  # removed between the check and the read
    for directory in v2_dirs(root, container_id):
        if (directory / "cpu.stat").is_file():
            try:
                return read_v2(directory)
            except (OSError, ValueError, KeyError):
                return None
    return None


def cpu_percent(before: Reading | None, before_at: float, now: Reading, now_at: float) -> float | None:
    """CPU use between two readings, in % of one core (200 = two cores busy); None without a usable earlier
    reading (the first look, or a container restarted in between: its counter went back)."""
    elapsed = now_at - before_at
    if before is None or elapsed <= 0 or now.cpu_ns < before.cpu_ns:
        return None
    return 100.0 * (now.cpu_ns - before.cpu_ns) / 1e9 / elapsed
