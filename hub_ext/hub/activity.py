"""The activity collector (issue 29, part 2), in the hub: who runs which lab, with what CPU and memory, now and over
the last hour, and the hourly figures behind the week's usage report (hub_ext.hub.usage).

Every ACTIVITY_INTERVAL seconds it makes ONE Docker call, the listing of the project's running labs (by label,
through the spawners' Docker gateway and thread pool), and reads each lab's CPU and memory from the host's cgroup
files (hub_ext.hub.cgroups), which the stack mounts read-only into the hub. Pages and APIs read what it holds: no
page view ever reaches Docker. Volume sizes come from the hub's shared `docker system df` (hub_ext.spawn.spawner
.disk_usage) every VOLUMES_EVERY intervals.

On Swarm the listing and the cgroup files are the hub's node's: labs on other nodes show their node, without figures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hub_ext.hub import cgroups, usage
from hub_ext.labs.policy import Policy, PolicyError, merge, parse_policy, size_bytes
from hub_ext.naming import GPUS_LABEL, PROJECT_LABEL, ROLE_LABEL, USER_LABEL, user_names
from hub_ext.spawn.spawner import disk_usage

log = logging.getLogger("JupyterHub").getChild("activity")
VOLUMES_EVERY = 10  # intervals between two looks at the volumes' sizes (a `docker system df` walks every volume)
HISTORY_S = 3600  # the sparkline's hour
CPU_RUNS_KEPT = 100  # the last runs' own CPU times, for the benchmark and the hub's log
SPARK_POINTS = 60  # points of the last hour a page gets per lab (a sparkline is ~120 px wide): keeps answers small


@dataclass(frozen=True)
class Lab:
    """A running lab as the one listing shows it."""

    user: str
    container_id: str
    image: str
    gpus: int  # GPUs handed to it (hub_ext.spawn.spawner.hand_out_gpus labels them); 0 without the label


def labs_in(listing: Iterable[Mapping[str, Any]]) -> dict[str, Lab]:
    """user -> their lab, from `docker ps` of the project's labelled containers (helpers, which carry a role, are not
    labs)."""
    found = {}
    for container in listing:
        labels = container.get("Labels") or {}
        user = labels.get(USER_LABEL)
        if not user or labels.get(ROLE_LABEL):
            continue
        devices = [device for device in labels.get(GPUS_LABEL, "").split(",") if device]
        found[user] = Lab(user, container["Id"], container.get("Image", ""), len(devices))
    return found


@dataclass
class LabState:
    """What the collector knows of one running lab: its latest figures and its last hour."""

    lab: Lab
    reading: cgroups.Reading | None
    at: float  # wall time of `reading`
    cpu_percent: float | None = None
    series: deque = field(default_factory=deque)  # (epoch seconds, cpu %, memory bytes), oldest first
    oom_seen: int = 0  # the container's kills for memory at the last reading (counted into Collector.oom_kills)


class Collector:
    """The figures of the labs of this hub's node, refreshed by `observe`; pure but for the cgroup files it reads."""

    def __init__(self, interval: float, cgroup_root: Path, read: Callable = cgroups.read) -> None:
        self.interval = interval
        self.cgroup_root = cgroup_root
        self.read = read
        self.labs: dict[str, LabState] = {}
        self.ledger = usage.Ledger()
        self.volume_sizes: dict[str, int | None] = {}  # volume name -> bytes (None: not measured)
        self.volumes_at: float | None = None
        self.node = ""  # this node's name, as Docker gives it
        self.volume_prefix = "jupyterlab"  # the spawners' (hub_ext.naming.user_names), learnt with the volumes
        self.runs = 0
        self.last_run: float | None = None  # wall time of the last successful run
        self.last_error = ""
        self.cpu_times: deque = deque(maxlen=CPU_RUNS_KEPT)  # seconds of the hub's CPU each run took
        self.history = max(2, math.ceil(HISTORY_S / interval) + 1)
        # user -> kills for memory in their labs since the hub started, every container of theirs summed: a counter
        # (hubforge_lab_oom_kills_total) that does not go back when a lab is replaced
        self.oom_kills: dict[str, int] = {}

    def observe(self, labs: Mapping[str, Lab], now: float) -> None:
        """One interval: the labs running now, each read from its cgroup; their figures into the ledger."""
        at = datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=None)
        for user in set(self.labs) - set(labs):
            del self.labs[user]  # stopped: its figures so far are in the ledger
        for user, lab in labs.items():
            reading = self.read(self.cgroup_root, lab.container_id)
            state = self.labs.get(user)
            if state is None or state.lab.container_id != lab.container_id:
                state = self.labs[user] = LabState(lab, None, now, series=deque(maxlen=self.history))
            previous, previous_at = state.reading, state.at
            state.lab, state.reading, state.at = lab, reading, now
            if reading is None:  # no cgroup here (another node), or it stopped meanwhile
                state.cpu_percent = None
                continue
            state.cpu_percent = cgroups.cpu_percent(previous, previous_at, reading, now)
            if reading.oom_kills > state.oom_seen:
                self.oom_kills[user] = self.oom_kills.get(user, 0) + reading.oom_kills - state.oom_seen
                state.oom_seen = reading.oom_kills
            state.series.append((int(now), round(state.cpu_percent or 0.0, 1), reading.memory_bytes))
            if state.cpu_percent is not None:
                seconds = min(now - previous_at, 3 * self.interval)  # a stalled hub does not bill its pause
                cpu_seconds = (reading.cpu_ns - previous.cpu_ns) / 1e9
                self.ledger.add(user, at, cpu_seconds, reading.memory_bytes, seconds, lab.gpus)
        self.runs += 1
        self.last_run = now

    def note_volumes(self, df: Mapping[str, Any], project: str, now: float) -> None:
        """The project's volume sizes from a `docker system df` answer."""
        sizes = {}
        for volume in df.get("Volumes") or []:
            if (volume.get("Labels") or {}).get(PROJECT_LABEL) != project:
                continue
            size = (volume.get("UsageData") or {}).get("Size", -1)
            sizes[volume["Name"]] = size if size is not None and size >= 0 else None
        self.volume_sizes, self.volumes_at = sizes, now

    def now_of(self, user: str) -> dict[str, Any] | None:
        """The user's lab's figures now, as the API shows them; None when the collector has not seen it running."""
        state = self.labs.get(user)
        if state is None:
            return None
        reading = state.reading
        return {
            "container": state.lab.container_id[:12],
            "image": state.lab.image,
            "node": self.node,
            "gpus": state.lab.gpus,
            "measured": reading is not None,
            "cpu_percent": None if state.cpu_percent is None else round(state.cpu_percent, 1),
            "memory_bytes": reading.memory_bytes if reading else None,
            "memory_limit": reading.memory_limit if reading else None,
            "series": thinned(state.series, SPARK_POINTS),
        }

    def status(self) -> dict[str, Any]:
        """Whether the collector runs, and what its runs cost the hub."""
        costs = sorted(self.cpu_times)
        median = costs[len(costs) // 2] if costs else None
        return {
            "interval": self.interval,
            "runs": self.runs,
            "last_run": _iso(self.last_run),
            "last_error": self.last_error,
            "labs_seen": len(self.labs),
            "volumes_measured_at": _iso(self.volumes_at),
            "run_cpu_seconds_median": median,
            "core_share_percent": None if median is None else round(100 * median / self.interval, 3),
        }


def thinned(series: Iterable[tuple], points: int) -> list[list]:
    """At most `points` of a series, evenly spread, the newest always kept."""
    found = list(series)
    step = math.ceil(len(found) / points) if found else 1
    return [list(point) for point in found[::-1][::step][::-1]]


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, timezone.utc).isoformat()


def group_policies(groups: Iterable[Any]) -> dict[str, Policy]:
    """Each group's policy (objects with `name` and `properties`); a group whose stored policy is bad is left out."""
    found = {}
    for group in groups:
        try:
            found[group.name] = parse_policy(group.name, group.properties)
        except PolicyError:
            continue
    return found


def quotas(policies: Mapping[str, Policy], groups: Iterable[str]) -> dict[str, int]:
    """The user's storage quotas from their groups' policies (the most generous), kind -> bytes."""
    policy = merge(Policy(), {name: policies[name] for name in groups if name in policies}).policy
    found = {}
    for kind, value in (("home", policy.home_quota), ("workspace", policy.workspace_quota)):
        if value:
            found[kind] = size_bytes(value)
    return found


# -- the execution: the hub's event loop, Docker through a spawner's gateway, the database ---------------------------
def gateway_of(app) -> Any | None:
    """A spawner of this hub, whose Docker gateway (one client, one thread pool for the whole hub) the collector uses;
    None when no spawner exists yet (then no lab of this hub can be running)."""
    for user in list(app.users.values()):
        spawner = user.spawners.get("") if "" in user.spawners else None
        if spawner is not None and hasattr(spawner, "docker"):
            return spawner
    return None


async def collect_once(app, collector: Collector, retention_days: int) -> None:
    """One run: the listing, the cgroup files, now and then the volumes, and the hours that are over to the table."""
    gateway = gateway_of(app)
    listing: list = []
    if gateway is not None:
        labels = [f"{PROJECT_LABEL}={gateway.project}", USER_LABEL]
        listing = await gateway.docker("containers", filters={"label": labels})
        if not collector.node:
            collector.node = ((await gateway.docker("info")) or {}).get("Name", "")  # once: this node's name
    started = time.thread_time()
    collector.observe(labs_in(listing or []), time.time())
    spent = time.thread_time() - started
    if gateway is not None and (
        (collector.runs - 1) % VOLUMES_EVERY == 0 or unmeasured(collector, gateway.volume_prefix)
    ):
        collector.volume_prefix = gateway.volume_prefix
        collector.note_volumes(await disk_usage(gateway.client), gateway.project, time.time())
    started = time.thread_time()
    now = usage.utc_now()
    done = collector.ledger.take(now)
    if done:
        usage.write(app.db, done)
        pruned = usage.prune(app.db, retention_days, now)
        log.info("activity: %d hourly figures written; %d past %d days dropped", len(done), pruned, retention_days)
    collector.cpu_times.append(spent + time.thread_time() - started)


def unmeasured(collector: Collector, prefix: str) -> bool:
    """Whether a running lab's home volume has no size yet (a new user's): then the volumes are looked at again
    before their turn, which the shared `docker system df` still allows at most once a minute."""
    return any(user_names(prefix, user).volumes["home"] not in collector.volume_sizes for user in collector.labs)


def flush(app, collector: Collector) -> None:
    """Write every figure held (the hub is stopping): the hour under way is added to when it starts again."""
    try:
        usage.write(app.db, collector.ledger.take(None))
    except Exception:  # noqa: BLE001 -- at shutdown the database may be gone already; an hour's figures are lost
        log.exception("activity: the figures of the hour under way could not be written")


async def collect_forever(app, collector: Collector, retention_days: int) -> None:
    log.info(
        "activity: every %s s, one Docker listing of the labs and their cgroup files under %s",
        collector.interval,
        collector.cgroup_root,
    )
    if not collector.cgroup_root.is_dir():
        log.warning("activity: %s is not mounted: labs show no CPU or memory figures", collector.cgroup_root)
    try:
        while True:
            try:
                await collect_once(app, collector, retention_days)
                collector.last_error = ""
            except Exception as exc:  # noqa: BLE001 -- one bad run must not end collecting for good
                collector.last_error = str(exc)[:300]
                log.exception("activity: a run failed; trying again in %s s", collector.interval)
            await asyncio.sleep(collector.interval)
    finally:
        flush(app, collector)


def volume_figures(collector: Collector, volumes: Mapping[str, str], quota: Mapping[str, int]) -> dict[str, Any]:
    """kind -> {size_bytes, quota_bytes} for one user's volumes (kind -> volume name)."""
    return {
        kind: {"size_bytes": collector.volume_sizes.get(name), "quota_bytes": quota.get(kind)}
        for kind, name in volumes.items()
        if name in collector.volume_sizes or kind in quota
    }
