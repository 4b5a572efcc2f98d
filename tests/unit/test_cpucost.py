"""The CPU meter's pure parts (issue 31, part 3), on files captured from this project's machine
(tests/unit/fixtures/cpucost): /proc/<pid>/stat and /proc/stat, an acct(2) file, the processes' parts, the cgroup
tree's containers, Docker's CPU over a window and the division per arriving user."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_ext.hub import cgroups
from tests.support.cpucost import (
    Exited,
    LabReading,
    Process,
    busy_ticks,
    comp_t,
    docker_comm,
    docker_ticks,
    lab_part,
    parse_acct,
    parse_stat,
    per_user,
    split,
)

FIXTURES = Path(__file__).parent / "fixtures" / "cpucost"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_proc_stat_of_daemons():
    dockerd = parse_stat(fixture("dockerd.stat"))
    assert (dockerd.pid, dockerd.comm, dockerd.ppid) == (19881, "dockerd", 1)
    assert (dockerd.own, dockerd.children, dockerd.start) == (28562 + 6737, 4581 + 4915, 4697445)
    containerd = parse_stat(fixture("containerd.stat"))
    assert (containerd.comm, containerd.ppid, containerd.own) == ("containerd", 19881, 1512 + 811)


def test_a_command_name_with_spaces_and_parentheses():
    odd = parse_stat(fixture("odd-comm.stat"))
    assert (odd.pid, odd.comm, odd.ppid, odd.own) == (18078, "odd) (name", 18035, 0)


def test_the_hosts_busy_time():
    # cpu  2751569 282489 1001890 5519958 99072 0 34196 1094 0 0: idle and iowait left out
    assert busy_ticks(fixture("proc-stat.txt")) == 2751569 + 282489 + 1001890 + 0 + 34196 + 1094


def test_acct_records():
    records = parse_acct((FIXTURES / "acct.bin").read_bytes())
    assert [(r.comm, r.ppid) for r in records] == [
        ("runc", 18122),
        ("python3", 18122),
        ("sh", 18122),
        ("python3", 18120),
    ]
    assert records[1].ticks == 6  # sum(range(3_000_000)): 60 ms
    assert parse_acct(b"\0" * 64) == []  # not version 3
    assert parse_acct((FIXTURES / "acct.bin").read_bytes()[:100]) == records[:1]  # a record cut short is skipped


@pytest.mark.parametrize(
    ("raw", "ticks"), [(0, 0), (6, 6), (8191, 8191), ((1 << 13) | 1024, 8192), ((2 << 13) | 3, 3 * 64)]
)
def test_comp_t(raw, ticks):
    assert comp_t(raw) == ticks


@pytest.mark.parametrize(
    ("comm", "docker"),
    [
        ("dockerd", True),
        ("containerd", True),
        ("containerd-shim", True),  # containerd-shim-runc-v2, cut to 15 characters
        ("runc", True),
        ("docker-proxy", True),
        ("runc:[2:INIT]", False),  # in the container's cgroup already
        ("python3", False),
        ("dockerd-rootless", False),
    ],
)
def test_docker_by_command_name(comm, docker):
    assert docker_comm(comm) is docker


@pytest.mark.parametrize(
    ("cmdline", "part"),
    [
        ((FIXTURES / "ipykernel.cmdline").read_bytes(), "kernel"),
        (
            b"/usr/bin/python3\0/usr/local/bin/jupyterhub-singleuser\0--SingleUserNotebookApp.default_url=/lab\0",
            "server",
        ),
        (b"/usr/bin/python3\0/usr/local/bin/jupyter-lab\0--ip=0.0.0.0\0", "server"),
        (b"tini\0-g\0--\0/usr/local/bin/start-lab.sh\0", "other"),
        (b"python3\0/usr/local/bin/hubforge-healthcheck\0", "other"),
        (b"", "other"),  # a zombie's cmdline is empty
    ],
)
def test_lab_processes_by_part(cmdline, part):
    assert lab_part(cmdline) == part


def process(pid: int, comm: str, own: int, start: int = 1, ppid: int = 1) -> Process:
    return Process(pid, comm, ppid, own, 0, start)


def test_docker_over_a_window():
    dockerd, containerd = process(10, "dockerd", 1000), process(11, "containerd", 500, ppid=10)
    shim = process(20, "containerd-shim", 30)
    before = {(p.pid, p.start): p for p in (dockerd, containerd, shim)}
    after = {
        (10, 1): process(10, "dockerd", 1300),
        (11, 1): process(11, "containerd", 550, ppid=10),
        (30, 9): process(30, "containerd-shim", 12, start=9),  # born within the window: all of it
    }
    exited = [
        Exited(20, 1, "containerd-shim", 45),  # was seen at 30: 15 more
        Exited(40, 30, "runc", 3),
        Exited(41, 10, "xtables-nft-mul", 2),  # dockerd's iptables
        Exited(42, 30, "python3", 9),  # a health check reaped by the shim: the lab's cgroup has it
        Exited(43, 11, "containerd-shim", 1),  # the shim's start command
        Exited(10, 1, "runc", 7),  # a pid alive at the end: a record from after the closing reading
    ]
    assert docker_ticks(before, after, exited) == 300 + 50 + 12 + 15 + 3 + 2 + 1
    assert docker_ticks(before, before, []) == 0


def test_pid_reused_within_the_window():
    before = {(50, 1): process(50, "runc", 4)}
    after = {(50, 7): process(50, "runc", 2, start=7)}  # the first runc exited, another got its pid
    assert docker_ticks(before, after, []) == 2


def test_a_labs_split():
    kernel = parse_stat(fixture("ipykernel.stat"))  # 21 + 8 ticks
    server, tini = process(7, "jupyterhub-sing", 150), process(1, "tini", 1)
    reading = split("load000", 2_400_000_000, [("kernel", kernel), ("server", server), ("other", tini)])
    assert reading == LabReading("load000", 2.4, 0.29, 1.5)
    assert reading.lab_s == pytest.approx(2.11)  # the cgroup less the kernel: server, tini and what exited


def test_per_arriving_user():
    labs = [LabReading("a", 1.0, 0.4, 0.5), LabReading("b", 2.0, 0.6, 1.1), LabReading("c", 1.5, 0.5, 0.8)]
    cost = per_user(labs, {"docker": 2.4, "hub": 0.9, "simulator": 1.5, "rest": 0.3}, arrivals=3)
    assert cost["per_user_s"] == {
        "lab": 1.0,  # (0.6 + 1.4 + 1.0) / 3
        "kernel": 0.5,
        "docker": 0.8,
        "hub": 0.3,
        "simulator": 0.5,
        "rest": 0.1,
    }
    assert cost["total_s"] == pytest.approx(2.6)  # lab + kernel + docker + hub, not the simulator or the rest
    assert cost["median_s"] == {"lab": 1.0, "kernel": 0.5, "lab_server": 0.8}
    assert per_user([], {"docker": 1.0}, arrivals=0) == {"arrivals": 0}
    assert per_user([], {"docker": 1.0, "hub": 1.0}, arrivals=2)["per_user_s"]["lab"] is None


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "leaf",
    ["cpuacct/docker/{id}", "cpuacct/system.slice/docker-{id}.scope", "docker/{id}", "system.slice/docker-{id}.scope"],
)
def test_containers_in_the_cgroup_tree(tmp_path, leaf):
    lab, hub = "a" * 64, "b" * 64
    for container in (lab, hub):
        write(tmp_path / leaf.format(id=container) / "cgroup.procs", "4242\n4250\n")
    write(tmp_path / "system.slice" / "cron.service" / "cgroup.procs", "1\n")  # not a container
    found = cgroups.cpu_dirs(tmp_path)
    assert found == {lab: tmp_path / leaf.format(id=lab), hub: tmp_path / leaf.format(id=hub)}
    assert cgroups.pids(found[lab]) == [4242, 4250]
    assert cgroups.pids(tmp_path / "gone") == []
    assert cgroups.cpu_dirs(tmp_path / "not-mounted") == {}


def test_the_arrival_window_closes_on_the_last_first_cell_or_failure():
    from tests.support.loadsim import Arrivals

    cells, closed = [], []
    arrivals = Arrivals(3, cells.append, lambda a: closed.append((a.cells, a.lost, a.stops_within)))
    arrivals.first_cell("load000")
    arrivals.stopping()  # within the window: counted
    arrivals.failed()
    assert not arrivals.done.is_set() and closed == []
    arrivals.first_cell("load002")
    assert arrivals.done.is_set() and closed == [(2, 1, 1)]
    arrivals.stopping()  # after the window: not counted
    arrivals.failed()  # a late failure does not close it twice
    assert cells == ["load000", "load002"] and closed == [(2, 1, 1)] and arrivals.stops_within == 1
