"""Activity benchmark (issue 29, part 2): how fast the Activity API answers with 500 users and 100 running labs, and
what the hub's collector costs.

Run: flock /tmp/hubforge-docker.lock python benchmarks/activity.py [--users 500] [--labs 100] [--window 60] [--baseline]
(after `invoke build`; it starts a stack of its own and removes it).

- Users: made through the hub's REST API with the admin's token (one POST /hub/api/users).
- Labs: the admin's lab is a real one (started through the API, so the hub has a spawner and its Docker gateway);
  the other `--labs` are stand-ins: small containers of the hub image that run `sleep` (a tenth of them a busy loop
  held to 5 % of a core), carrying the labels of a lab of one of the users (hubforge.project, hubforge.user). The
  collector sees them exactly as it sees labs: in its one listing, and through their cgroup files. Real labs take
  ~52 MiB and a few seconds of CPU each to start on this machine's 2 cores; the figures measured here do not depend
  on what runs inside.
- Printed: the API's answer time (median and p95 of 20 requests, JSON and CSV) once the collector has run; the same
  answer computed in-process for a full hour of sparkline points for every lab; the collector's own CPU per run (its
  self-measured thread time, as the API reports it) as a share of a core; and the hub container's whole CPU use over
  a quiet window (no requests), from its cgroup, which bounds what collecting costs from above. `--baseline` measures
  that window with the collector idle (it runs once, at the start, before any lab), for the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker  # noqa: E402
from jupyterhub import orm  # noqa: E402

from hub_ext.hub import cgroups  # noqa: E402
from hub_ext.hub.activity import Collector, Lab  # noqa: E402
from hub_ext.naming import PROJECT_LABEL, USER_LABEL  # noqa: E402
from hub_ext.web.activitypage import activity_rows  # noqa: E402
from tests.support.helpers import wait_until  # noqa: E402
from tests.support.livestack import ADMIN, admin_api, claim_admin, current_images, start_stack, stop_stack  # noqa: E402

INTERVAL = 15
BASELINE_INTERVAL = 86400
REQUESTS = 20


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def timed_requests(call, count: int = REQUESTS) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        answer = call()
        samples.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text[:300]
    return samples


def report_times(what: str, samples: list[float]) -> None:
    print(
        f"{what}: median {statistics.median(samples) * 1e3:.0f} ms, p95 {percentile(samples, 0.95) * 1e3:.0f} ms "
        f"({len(samples)} requests)"
    )


def start_stand_ins(project: str, image: str, users: list[str]) -> list:
    client = docker.from_env()
    made = []
    for index, user in enumerate(users):
        busy = index % 10 == 0
        command = ["sh", "-c", "while :; do :; done"] if busy else ["sleep", "infinity"]
        made.append(
            client.containers.run(
                image,
                command,
                entrypoint=[],
                detach=True,
                name=f"{project}-standin-{index:03d}",
                labels={PROJECT_LABEL: project, USER_LABEL: user, "hubforge.benchmark": "stand-in"},
                network_mode="none",
                mem_limit="64m",
                nano_cpus=50_000_000 if busy else None,
            )
        )
    return made


def hub_cpu_seconds(container_id: str) -> float:
    reading = cgroups.read(Path("/sys/fs/cgroup"), container_id)
    if reading is None:
        raise SystemExit("cannot read the hub container's cgroup under /sys/fs/cgroup (run on the Docker host)")
    return reading.cpu_ns / 1e9


def in_process(users: int, labs: int) -> list[float]:
    """The API's work (every user's row, as JSON) with a full hour of points for every lab, in this process."""
    db = orm.new_session_factory("sqlite:///:memory:")()
    groups = [orm.Group(name=f"g{index}") for index in range(20)]
    db.add_all(groups)
    for index in range(users):
        db.add(orm.User(name=f"u{index:03d}", groups=[groups[index % 20], groups[(index + 7) % 20]]))
    db.commit()
    readings: dict[str, cgroups.Reading] = {}
    collector = Collector(INTERVAL, Path("/nowhere"), read=lambda root, cid: readings.get(cid))
    running = {f"u{index:03d}": Lab(f"u{index:03d}", f"{index:064d}", "hubforge/lab:bench", 0) for index in range(labs)}
    now = time.time()
    for step in range(3600 // INTERVAL + 1):
        for index, lab in enumerate(running.values()):
            readings[lab.container_id] = cgroups.Reading(step * 10**9 * (index % 3), (50 + index) << 20, 1 << 31)
        collector.observe(running, now - 3600 + step * INTERVAL)
    samples = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        json.dumps({"users": activity_rows(db, collector)})
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--labs", type=int, default=100, help="stand-in labs, besides the admin's real one")
    parser.add_argument("--window", type=float, default=60, help="seconds of the quiet window for the hub's CPU")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help=f"the hub's CPU alone: the collector runs once, at the start, then waits {BASELINE_INTERVAL} s",
    )
    options = parser.parse_args()
    print(f"activity benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    if not options.baseline:
        report_times(
            f"in-process: rows of {options.users} users with {options.labs} labs, a full hour of points each",
            in_process(options.users, options.labs),
        )
    interval = BASELINE_INTERVAL if options.baseline else INTERVAL
    live = start_stack(Path(tempfile.mkdtemp(prefix="activity-bench-")), {"ACTIVITY_INTERVAL": str(interval)})
    try:
        admin = claim_admin(live)
        api = admin_api(live, admin)
        names = [f"u{index:03d}" for index in range(options.users)]
        started = time.perf_counter()
        made = api.request("POST", "hub/api/users", json={"usernames": names})
        assert made.status_code == 201, made.text[:300]
        print(f"{options.users} users made through the REST API in {time.perf_counter() - started:.1f} s")
        api.start(ADMIN)
        images, _ = current_images()
        started = time.perf_counter()
        start_stand_ins(live.project, images["hub"], names[: options.labs])
        print(f"{options.labs} stand-in labs started in {time.perf_counter() - started:.1f} s (+ the admin's real lab)")
        if options.baseline:
            hub_share(live, options.window, f"{options.labs + 1} labs, the collector idle (baseline)")
            return
        measure(api, options.users, options.labs)
        hub_share(live, options.window, f"{options.labs + 1} labs")
        status = api.request("GET", "hub/api/hubforge/activity").json()["collector"]
        print(
            f"collector's own CPU per run (median of its last {min(status['runs'], 100)} runs): "
            f"{status['run_cpu_seconds_median'] * 1e3:.1f} ms = {status['core_share_percent']:.3f} % of a core "
            f"at one run per {INTERVAL} s"
        )
    finally:
        stop_stack(live)


def measure(api, users: int, labs: int) -> None:
    """The API's answer times once the collector has seen every lab."""

    def seen() -> dict | None:
        status = api.request("GET", "hub/api/hubforge/activity").json()["collector"]
        return status if status.get("labs_seen", 0) >= labs + 1 and status["runs"] >= 3 else None

    status = wait_until(seen, timeout=6 * INTERVAL, what="the collector to see every lab, 3 runs in", interval=2)
    print(f"collector: {status['labs_seen']} labs seen after {status['runs']} runs, every {INTERVAL} s")

    report_times(
        f"GET /hub/api/hubforge/activity, {users} users, {labs + 1} labs",
        timed_requests(lambda: api.request("GET", "hub/api/hubforge/activity")),
    )
    report_times(
        "GET /hub/api/hubforge/activity?format=csv",
        timed_requests(lambda: api.request("GET", "hub/api/hubforge/activity", params={"format": "csv"})),
    )
    report_times(
        "GET /hub/api/hubforge/usage?by=group",
        timed_requests(lambda: api.request("GET", "hub/api/hubforge/usage", params={"by": "group"})),
    )
    answer = api.request("GET", "hub/api/hubforge/activity")
    print(f"answer size: {len(answer.content) / 1024:.0f} KiB JSON")


def hub_share(live, window: float, what: str) -> None:
    """The hub container's whole CPU use over a quiet window, from its cgroup."""
    hub = live.hub()
    before, at = hub_cpu_seconds(hub.id), time.monotonic()
    time.sleep(window)
    used, elapsed = hub_cpu_seconds(hub.id) - before, time.monotonic() - at
    print(
        f"hub container, whole (JupyterHub, proxy, collector), quiet {elapsed:.0f} s, {what}: "
        f"{100 * used / elapsed:.2f} % of a core"
    )


if __name__ == "__main__":
    main()
