"""Login storm benchmark: 30 approved users log in at the same moment, while a bystander polls /hub/health.

Run: python benchmarks/login.py   (needs the images of `invoke build`; starts and removes its own stack)
Prints one login alone, then for 30 simultaneous right-password logins and for 30 simultaneous wrong-password
logins: the time until all had their answer, p50/p95 per login, and the bystander's worst /hub/health wait.

Every request here reaches the hub from the host, through Docker's port forwarding, so from one address: the
stack runs with LOGIN_ADDRESS_LIMIT raised so that the per-address budget does not refuse the storm itself.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.hubclient import HubSession  # noqa: E402
from tests.support.livestack import PASSWORD, claim_admin, start_stack, stop_stack  # noqa: E402
from tests.support.loadsim import percentile  # noqa: E402

USERS = 30


class Bystander(threading.Thread):
    """GET /hub/health every 50 ms and keep each answer's latency."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.session = HubSession(url)
        self.latencies: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            started = time.monotonic()
            self.session.http.get(self.session.url("hub/health"), timeout=60)
            self.latencies.append(time.monotonic() - started)
            time.sleep(0.05)


def storm(url: str, logins: list[tuple[str, str]]) -> tuple[float, list[float], list[float], list[int]]:
    """All logins posted at once (each with its login form already open); returns total, per-login times,
    the bystander's latencies and the status codes."""
    sessions = [HubSession(url) for _ in logins]
    forms = [session.xsrf("hub/login") for session in sessions]
    gate = threading.Barrier(len(logins) + 1)

    def one(index: int) -> tuple[float, int]:
        session, (name, password) = sessions[index], logins[index]
        gate.wait()
        started = time.monotonic()
        answer = session.http.post(
            session.url("hub/login"),
            data={"_xsrf": forms[index], "username": name, "password": password},
            allow_redirects=False,
            timeout=120,
        )
        return time.monotonic() - started, answer.status_code

    bystander = Bystander(url)
    bystander.start()
    time.sleep(0.3)
    with ThreadPoolExecutor(max_workers=len(logins)) as pool:
        futures = [pool.submit(one, i) for i in range(len(logins))]
        gate.wait()
        started = time.monotonic()
        results = [f.result() for f in futures]
        total = time.monotonic() - started
    time.sleep(0.3)
    bystander.done.set()
    bystander.join()
    return total, [r[0] for r in results], bystander.latencies, [r[1] for r in results]


def report(title: str, total: float, times: list[float], health: list[float], statuses: list[int]) -> None:
    counts = {code: statuses.count(code) for code in sorted(set(statuses))}
    print(
        f"{title}: all answered in {total:.2f} s; per login p50 {statistics.median(times):.2f} s, "
        f"p95 {percentile(times, 0.95):.2f} s; statuses {counts}"
    )
    print(
        f"  bystander /hub/health ({len(health)} polls): p50 {statistics.median(health) * 1000:.0f} ms, "
        f"max {max(health) * 1000:.0f} ms"
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hubforge-login-bench-") as tmp:
        live = start_stack(Path(tmp), {"LOGIN_ADDRESS_LIMIT": "10000"})
        try:
            admin = claim_admin(live)
            names = [f"storm{i}" for i in range(USERS)]
            print(f"signing up and approving {USERS} users ...", flush=True)
            for name in names:
                HubSession(live.url).signup(name, PASSWORD)
                admin.approve(name)

            alone = []
            for _ in range(3):
                session = HubSession(live.url)
                session.xsrf("hub/login")
                started = time.monotonic()
                assert session.login(names[0], PASSWORD).status_code == 302
                alone.append(time.monotonic() - started)
            print(f"one login alone: median {statistics.median(alone):.2f} s (3 runs, form fetch included)")

            report(f"{USERS} simultaneous logins", *storm(live.url, [(name, PASSWORD) for name in names]))
            # wrong passwords for 30 different accounts: what an unauthenticated client can make the hub do
            report(
                f"{USERS} simultaneous failed logins",
                *storm(live.url, [(name, "not-the-password-9") for name in names]),
            )
        finally:
            stop_stack(live)


if __name__ == "__main__":
    main()
