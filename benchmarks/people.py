"""People benchmark (issue 29, part 1): how long an admin waits for a class of accounts, and what the hub does
meanwhile.

Run: flock /tmp/hubforge-docker.lock python benchmarks/people.py [--sizes 40,200] [--runs 3]
(after `invoke build`; it starts a stack of its own and removes it).

Each batch is one POST /hub/api/hubforge/people with N new names (each gets a generated passphrase, hashed with
bcrypt in the hub's hashing threads, off the event loop). Printed per size: the batch's answer time (median of
`--runs`), the time per account, and the slowest /hub/health answer a bystander saw during the batches (the event
loop stays free while the hashes run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from tests.support.hubclient import plain_get  # noqa: E402
from tests.support.livestack import admin_api, claim_admin, start_stack, stop_stack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="40,200", help="batch sizes, comma-separated (default 40,200)")
    parser.add_argument("--runs", type=int, default=3, help="batches of each size (default 3)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    live = start_stack(Path(tempfile.mkdtemp(prefix="people-bench-")))
    try:
        api = admin_api(live, claim_admin(live))
        waits: list[float] = []
        stop = threading.Event()

        def bystander() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                plain_get(live.url + "hub/health")
                waits.append(time.perf_counter() - started)
                time.sleep(0.05)

        watcher = threading.Thread(target=bystander, daemon=True)
        watcher.start()
        print(f"{'accounts':>8}  {'batch s (median)':>16}  {'s per account':>13}  {'slowest /hub/health s':>21}")
        for size in sizes:
            times = []
            waits.clear()
            for run in range(args.runs):
                names = "\n".join(f"b{size}r{run}u{n:04d}" for n in range(size))
                started = time.perf_counter()
                answer = api.request("POST", "hub/api/hubforge/people", json={"text": names}, timeout=600)
                times.append(time.perf_counter() - started)
                assert answer.status_code == 201 and len(answer.json()["created"]) == size, answer.text[:300]
            batch = statistics.median(times)
            print(f"{size:>8}  {batch:>16.2f}  {batch / size:>13.3f}  {max(waits, default=0.0):>21.3f}")
        stop.set()
        watcher.join(timeout=5)
    finally:
        stop_stack(live)


if __name__ == "__main__":
    main()
