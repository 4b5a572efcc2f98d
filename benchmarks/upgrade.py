"""Upgrade benchmark: how long the hub is unavailable during `invoke upgrade`, and whether any lab is lost.

Run: python benchmarks/upgrade.py [--labs 10] [--runs 3]   (Docker, `invoke build`'s images, Debian's docker-registry)
Starts a stack (its own project, free ports) with N users whose labs run, pushes releases 0.9.0 and 0.9.2 to a
registry on loopback (today's images, each hub one label apart, so that the hub is really recreated), then alternates
`invoke upgrade --to 0.9.0` and `--to 0.9.2`, `--runs` times in all. During each, a prober
asks the hub's /hub/health and one lab's /api (through the proxy) every 100 ms. Prints, per upgrade and as medians:
the command's wall time, the hub's longest unavailability (first failed to next good /hub/health), the lab's longest
one, and how many labs were lost (a lab container that is not the same one, running, afterwards).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.support.helpers import positive  # noqa: E402
from tests.support.livestack import approved_user, claim_admin, start_stack, stop_stack  # noqa: E402
from tests.support.registry import NAMESPACE, loopback_registry, push_release  # noqa: E402

PROBE_INTERVAL = 0.1
VERSIONS = ("0.9.0", "0.9.2")


class Prober(threading.Thread):
    """GETs `url` every PROBE_INTERVAL until stopped; the longest time from a failure to the next success."""

    def __init__(self, url: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.url, self.deadline = url, deadline
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = False
        self.done = threading.Event()
        self.longest = 0.0
        self.failures = 0

    def run(self) -> None:
        down_since = None
        while not self.done.is_set() and time.monotonic() < self.deadline:
            try:
                ok = self.session.get(self.url, timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
            now = time.monotonic()
            if ok and down_since is not None:
                self.longest = max(self.longest, now - down_since)
                down_since = None
            elif not ok:
                self.failures += 1
                down_since = down_since or now
            time.sleep(PROBE_INTERVAL)
        if down_since is not None:  # never came back while probed
            self.longest = max(self.longest, time.monotonic() - down_since)


def one_upgrade(live, args: list[str], lab_url: str) -> dict[str, float]:
    labs = {c.labels.get("hubforge.user"): c.id for c in live.containers() if c.labels.get("hubforge.user")}
    deadline = time.monotonic() + 900
    hub, lab = Prober(live.url + "hub/health", deadline), Prober(lab_url, deadline)
    hub.start()
    lab.start()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "upgrade", *args, "--project", live.project],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "INVOKE_HUBFORGE_STACK_DIR": str(live.stack.options.run_dir.parent)},
    )
    took = time.monotonic() - started
    time.sleep(2)  # a last probe after the command's end
    hub.done.set()
    lab.done.set()
    hub.join()
    lab.join()
    if done.returncode != 0:
        raise SystemExit(f"invoke upgrade {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    after = {c.labels.get("hubforge.user"): c for c in live.containers() if c.labels.get("hubforge.user")}
    lost = sum(1 for user, cid in labs.items() if user not in after or after[user].id != cid)
    lost += sum(1 for c in after.values() if c.status != "running")
    return {"command": took, "hub": hub.longest, "lab": lab.longest, "lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", type=positive, default=10, help="running labs during the upgrades (default 10)")
    parser.add_argument("--runs", type=positive, default=3, help="upgrades, alternating release and checkout")
    options = parser.parse_args()
    import urllib3

    urllib3.disable_warnings()
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-") as tmp:
        folder = Path(tmp)
        (folder / "registry").mkdir()
        env = {"BACKUP_REPOSITORY": str(folder / "repository"), "BACKUP_PASSWORD_FILE": str(folder / "password")}
        (folder / "password").write_text("a-benchmark-password\n")
        with loopback_registry(folder / "registry") as registry:
            for version in VERSIONS:
                push_release(registry, version, f'LABEL org.opencontainers.image.version="{version}"')
            live = start_stack(folder / "stack", env, volume_prefix="")
            try:
                admin = claim_admin(live)
                for index in range(options.labs):
                    _, api = approved_user(live, admin, f"user{index}")
                    api.start(f"user{index}")
                lab_url = live.url.replace("://hub.", "://user0.hub.") + "user/user0/api"
                print(f"stack {live.project}: {options.labs} labs running; upgrading {options.runs} times")
                rows = []
                for run in range(options.runs):
                    version = VERSIONS[run % 2]
                    args = ["--to", version, "--registry", registry, "--namespace", NAMESPACE]
                    row = one_upgrade(live, args, lab_url)
                    rows.append(row)
                    print(
                        f"  to {version}: command {row['command']:.1f} s, hub "
                        f"unavailable {row['hub']:.1f} s, lab unreachable {row['lab']:.1f} s, labs lost {row['lost']}"
                    )
                print(
                    "median: command {:.1f} s, hub unavailable {:.1f} s, lab unreachable {:.1f} s, labs lost {}".format(
                        statistics.median(r["command"] for r in rows),
                        statistics.median(r["hub"] for r in rows),
                        statistics.median(r["lab"] for r in rows),
                        max(r["lost"] for r in rows),
                    )
                )
            finally:
                stop_stack(live)


if __name__ == "__main__":
    main()
