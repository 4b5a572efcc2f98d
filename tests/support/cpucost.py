"""What each arriving user costs in CPU-seconds until their first cell runs, split by part: benchmarks/load.py's meter.

Read from the host, never from Docker's API (whose calls would add to the Docker figure being measured):

- **lab** and **kernel**: each lab container's cgroup (hub_ext.hub.cgroups), read the moment its user's first cell
  has run. The ipykernel processes in it (their /proc/<pid>/stat, utime + stime) are the kernel; the rest of the
  cgroup's total is the lab: the Jupyter server, and processes that came and went (the start script, the image's
  health check that Docker execs in the container every 30 s, runc's init before it became the container's process).
- **hub**: the hub's and the proxy's containers' cgroups, over the arrival window (JupyterHub and its proxy).
- **Docker**: dockerd, containerd, the containerd shims, runc and docker-proxy on the host. Live processes by their
  /proc/<pid>/stat (own utime + stime), and those that exited during the window (each runc, a shim whose container
  stopped, the iptables runs of dockerd and containerd's children) by the kernel's process accounting (acct(2)),
  switched on for the window only: an exited process's record gives its whole CPU, less what an earlier reading saw.
  The processes that a shim reaps from inside a container (health checks) are the lab's, not Docker's.
- **simulator**: this process (getrusage): the simulated browsers stand in for machines of their own.
- **rest**: everything else the host's cores did over the window (/proc/stat), measured as a remainder: the labs'
  work after each user's first cell, the bystander, the kernel's own threads, and any other work on the machine.

Hub, Docker, simulator and rest are shared, so they are window totals divided by the users who arrived; their figure
is exact for arrivals only when no server stopped within the window (load.py --hold-stops). Resolution: one clock
tick (10 ms) per process, rounded down by the kernel, so many short runc runs are a few ms low each.
"""

from __future__ import annotations

import ctypes
import os
import queue
import resource
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hub_ext.hub import cgroups

TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc/<pid>/stat, /proc/stat and acct(2) records (USER_HZ)
DOCKER_COMMS = ("dockerd", "containerd", "runc", "docker-proxy")  # and containerd-shim*, by prefix
DAEMONS = ("dockerd", "containerd")  # whose own children (iptables, shims starting) are Docker's work
ACCT_V3 = struct.Struct("=BBHIIIIIIfHHHHHHHH16s")  # struct acct_v3 in <linux/acct.h>: 64 bytes
PARTS = ("lab", "kernel", "docker", "hub")  # the platform's parts, in the order printed


# -- the files, parsed -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Process:
    """A /proc/<pid>/stat: own and reaped children's CPU in clock ticks; `start` tells reused pids apart."""

    pid: int
    comm: str
    ppid: int
    own: int
    children: int
    start: int


def parse_stat(text: str) -> Process:
    """/proc/<pid>/stat; the command name sits in parentheses and may hold spaces and parentheses itself."""
    head, _, tail = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = tail.split()  # fields[0] is the state, field 3 of proc(5)
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return Process(int(pid), comm, int(fields[1]), utime + stime, cutime + cstime, int(fields[19]))


def busy_ticks(proc_stat: str) -> int:
    """The host's busy CPU time from /proc/stat's first line: user, nice, system, irq, softirq and steal (guest time
    is already within user)."""
    fields = [int(v) for v in proc_stat.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


@dataclass(frozen=True)
class Exited:
    """An acct(2) record: a process that exited, with its whole CPU in clock ticks."""

    pid: int
    ppid: int
    comm: str
    ticks: int


def comp_t(value: int) -> int:
    """acct's 16-bit float: a 13-bit mantissa and a 3-bit base-8 exponent."""
    return (value & 0x1FFF) << (3 * (value >> 13))


def parse_acct(data: bytes) -> list[Exited]:
    """The records of an acct(2) file of version 3 (what Linux writes); others are skipped."""
    found = []
    for offset in range(0, len(data) - ACCT_V3.size + 1, ACCT_V3.size):
        fields = ACCT_V3.unpack_from(data, offset)
        if fields[1] & 0x0F != 3:
            continue
        comm = fields[-1].split(b"\0")[0].decode(errors="replace")
        found.append(Exited(fields[6], fields[7], comm, comp_t(fields[10]) + comp_t(fields[11])))
    return found


# -- which part a process belongs to ---------------------------------------------------------------------------------
def docker_comm(comm: str) -> bool:
    """Docker's own programs, by command name (a shim's is cut to 15 characters: "containerd-shim")."""
    return comm in DOCKER_COMMS or comm.startswith("containerd-shim")


def lab_part(cmdline: bytes) -> str:
    """A lab container's process, from its /proc/<pid>/cmdline: "kernel" (ipykernel), "server" (the Jupyter server,
    exec'd by start-lab.sh) or "other" (tini, health checks)."""
    args = [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    if any("ipykernel" in arg for arg in args):
        return "kernel"
    if any(Path(arg).name.startswith(("jupyterhub-singleuser", "jupyter-lab", "jupyter-server")) for arg in args):
        return "server"
    return "other"


def docker_ticks(
    before: dict[tuple[int, int], Process], after: dict[tuple[int, int], Process], exited: list[Exited]
) -> int:
    """Docker's CPU over a window: what each live process gained (from 0 when it was born within), plus each exited
    Docker process (and each exited child of dockerd or containerd) less what the first reading had seen of it.
    Records of processes still alive at the end are of pids reused after it, and are skipped."""
    gained = sum(p.own - (before[key].own if key in before else 0) for key, p in after.items())
    daemons = {p.pid for p in (*before.values(), *after.values()) if p.comm in DAEMONS}
    seen = {p.pid: p.own for p in before.values()}
    alive = {p.pid for p in after.values()}
    for record in exited:
        if record.pid not in alive and (docker_comm(record.comm) or record.ppid in daemons):
            gained += max(0, record.ticks - seen.get(record.pid, 0))
    return gained


@dataclass(frozen=True)
class LabReading:
    """One lab at its user's first cell, in CPU-seconds."""

    user: str
    total_s: float  # the container's cgroup
    kernel_s: float
    server_s: float

    @property
    def lab_s(self) -> float:
        return max(0.0, self.total_s - self.kernel_s)


def split(user: str, cgroup_ns: int, processes: Iterable[tuple[str, Process]]) -> LabReading:
    """A lab's reading from its cgroup total and its live processes, each with its part (lab_part)."""
    by_part = {"kernel": 0, "server": 0, "other": 0}
    for part, process in processes:
        by_part[part] += process.own
    return LabReading(user, cgroup_ns / 1e9, by_part["kernel"] / TICKS, by_part["server"] / TICKS)


def per_user(labs: list[LabReading], shared_s: dict[str, float], arrivals: int) -> dict:
    """CPU-seconds per arriving user: the labs' and kernels' own mean (and median), the shared parts divided by
    the arrivals, and the platform's total (lab + kernel + Docker + hub)."""
    if not arrivals:
        return {"arrivals": 0}
    parts = {
        "lab": sum(r.lab_s for r in labs) / len(labs) if labs else None,
        "kernel": sum(r.kernel_s for r in labs) / len(labs) if labs else None,
        **{name: seconds / arrivals for name, seconds in shared_s.items()},
    }
    return {
        "arrivals": arrivals,
        "labs_read": len(labs),
        "per_user_s": {name: None if value is None else round(value, 3) for name, value in parts.items()},
        "total_s": round(sum(parts[name] or 0.0 for name in PARTS), 3),
        "median_s": {
            "lab": round(statistics.median(r.lab_s for r in labs), 3) if labs else None,
            "kernel": round(statistics.median(r.kernel_s for r in labs), 3) if labs else None,
            "lab_server": round(statistics.median(r.server_s for r in labs), 3) if labs else None,
        },
    }


# -- reading the host ----------------------------------------------------------------------------------------------
def read_process(proc: Path, pid: int | str) -> Process | None:
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # gone between the listing and the read


def docker_processes(proc: Path) -> dict[tuple[int, int], Process]:
    """Docker's processes now, keyed by (pid, start time)."""
    found = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if docker_comm(comm) and (process := read_process(proc, entry.name)) is not None:
                found[(process.pid, process.start)] = process
    return found


class Accounting:
    """acct(2) into a file of our own for the window: every process that exits leaves a record. Root only; a host
    without it (or where it fails) leaves the exited processes unmeasured, and the report says so."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        handle, name = tempfile.mkstemp(prefix="hubforge-acct-")
        os.close(handle)
        self.path = Path(name)
        self.on = self.libc.acct(str(self.path).encode()) == 0
        self.error = None if self.on else os.strerror(ctypes.get_errno())

    def stop(self) -> list[Exited]:
        if self.on:
            self.libc.acct(None)
            self.on = False
        try:
            return parse_acct(self.path.read_bytes())
        finally:
            self.path.unlink(missing_ok=True)


class LabFinder:
    """Which container is whose lab, from the cgroup tree and the JUPYTERHUB_USER of its first process: no Docker
    call. A container whose first process shows no user (the hub, the netguard, or a lab whose runc init has not
    become tini yet) is looked at again on the next refresh."""

    def __init__(self, root: Path, proc: Path) -> None:
        self.root, self.proc = root, proc
        self.owner: dict[str, str] = {}  # container id -> user
        self.dirs: dict[str, Path] = {}

    def find(self, user: str) -> tuple[str, Path] | None:
        for _ in range(2):  # the second pass after a fresh listing of the tree
            for container, owner in self.owner.items():
                if owner == user:
                    return container, self.dirs[container]
            self.refresh()
        return None

    def refresh(self) -> dict[str, str]:
        """The labs in the tree now, by container id."""
        now = cgroups.cpu_dirs(self.root)
        for container, directory in now.items():
            if container in self.owner:
                continue
            self.dirs[container] = directory
            for pid in cgroups.pids(directory)[:1]:
                try:
                    environ = (self.proc / str(pid) / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                for pair in environ:
                    if pair.startswith(b"JUPYTERHUB_USER="):
                        self.owner[container] = pair.split(b"=", 1)[1].decode()
        return {container: owner for container, owner in self.owner.items() if container in now}


class Meter(threading.Thread):
    """The arrival window's CPU: a reading at `begin`, one per lab as its user's first cell runs (`first_cell`, which
    only queues the name, so the simulator's event loop never waits), and the closing reading at `end`."""

    END = object()

    def __init__(
        self, hub_ids: tuple[str, ...], cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")
    ) -> None:
        super().__init__(daemon=True)
        self.hub_ids, self.root, self.proc = hub_ids, cgroup_root, proc
        self.finder = LabFinder(cgroup_root, proc)
        self.inbox: queue.Queue = queue.Queue()
        self.labs: list[LabReading] = []
        self.missed: list[str] = []
        self.closed = threading.Event()
        self.result: dict = {}

    def snapshot(self) -> dict:
        hubs = [cgroups.read(self.root, hub_id) for hub_id in self.hub_ids]
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "at": time.monotonic(),
            "machine": busy_ticks((self.proc / "stat").read_text()) / TICKS,
            "hub": sum(hub.cpu_ns for hub in hubs) / 1e9 if all(hubs) else None,
            "docker": docker_processes(self.proc),
            "simulator": own.ru_utime + own.ru_stime,
        }

    def begin(self) -> None:
        self.first = self.snapshot()
        self.accounting = Accounting()
        self.start()

    def first_cell(self, user: str) -> None:
        self.inbox.put(user)

    def end(self, arrivals: int, stops_within: int) -> None:
        self.inbox.put((self.END, arrivals, stops_within))

    def run(self) -> None:
        for _ in range(1_000_000):  # bounded; ends at END
            item = self.inbox.get()
            if isinstance(item, tuple) and item[0] is self.END:
                self.close(*item[1:])
                return
            self.read_lab(item)

    def read_lab(self, user: str) -> None:
        found = self.finder.find(user)
        reading = cgroups.read(self.root, found[0]) if found else None
        if reading is None:
            self.missed.append(user)
            return
        processes = []
        for pid in cgroups.pids(found[1]):
            process = read_process(self.proc, pid)
            try:
                cmdline = (self.proc / str(pid) / "cmdline").read_bytes()
            except OSError:
                continue
            if process is not None:
                processes.append((lab_part(cmdline), process))
        self.labs.append(split(user, reading.cpu_ns, processes))

    def close(self, arrivals: int, stops_within: int) -> None:
        last = self.snapshot()
        exited = self.accounting.stop()
        first = self.first
        shared = {
            "docker": docker_ticks(first["docker"], last["docker"], exited) / TICKS,
            "hub": (last["hub"] or 0.0) - (first["hub"] or 0.0),
            "simulator": last["simulator"] - first["simulator"],
        }
        machine = last["machine"] - first["machine"]
        labs = sum(r.total_s for r in self.labs)
        shared["rest"] = machine - labs - sum(shared.values())
        self.result = {
            "window_s": round(last["at"] - first["at"], 1),
            **per_user(self.labs, shared, arrivals),
            "machine_per_user_s": round(machine / arrivals, 3) if arrivals else None,
            "stops_within": stops_within,
            "labs_missed": self.missed,
            "dockerd_seen": sum(1 for p in last["docker"].values() if p.comm == "dockerd"),
            "exited_measured": self.accounting.error is None,
            "exited_error": self.accounting.error,
            "hub_measured": first["hub"] is not None and last["hub"] is not None,
        }
        self.closed.set()

    def summary(self, timeout: float = 60) -> dict:
        self.closed.wait(timeout)
        return self.result
