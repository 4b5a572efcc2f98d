"""Broadcast benchmark: N running labs (default 20), each with a listener on its event stream; one broadcast.

Run: python benchmarks/broadcast.py [--labs 100]   (needs the images of `invoke build`; starts and removes its
own stack)
Prints how long the API call took and when the first and the last lab had the message, for three broadcasts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.hubclient import EventListener, HubAPI  # noqa: E402
from tests.support.livestack import admin_api, claim_admin, start_stack, stop_stack  # noqa: E402
from tests.support.loadsim import memory_bytes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="time one broadcast until the last of N running labs has it")
    parser.add_argument(
        "--labs", type=int, default=20, help="running labs, each with an open event stream (default 20)"
    )
    labs = parser.parse_args().labs
    if labs < 1:
        parser.error(f"--labs must be 1 or more, got {labs}")
    with tempfile.TemporaryDirectory(prefix="hubforge-broadcast-bench-") as tmp:
        live = start_stack(Path(tmp), {"LAB_MEM_LIMIT": "1G"})
        try:
            admin = claim_admin(live)
            api = admin_api(live, admin)
            users = [f"b{i:03d}" for i in range(labs)]
            assert api.request("POST", "hub/api/users", json={"usernames": users}).status_code == 201
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=min(labs, 8)) as pool:  # spawns queue for a start slot anyway
                list(pool.map(lambda name: api.start(name, timeout=600), users))
            print(f"{labs} labs running after {time.monotonic() - started:.0f} s", flush=True)
            lab_memory = sorted(memory_bytes(live.lab(name).stats(stream=False, one_shot=True)) for name in users)
            print(
                f"memory with {labs} labs running: hub "
                f"{memory_bytes(live.hub().stats(stream=False, one_shot=True)) / 2**20:.0f} MiB; "
                f"a lab p50 {lab_memory[len(lab_memory) // 2] / 2**20:.0f} MiB, max {lab_memory[-1] / 2**20:.0f} MiB, "
                f"all labs {sum(lab_memory) / 2**30:.1f} GiB",
                flush=True,
            )
            listeners = [
                EventListener(
                    HubAPI(
                        live.url,
                        api.request("POST", f"hub/api/users/{n}/tokens", json={"expires_in": 600}).json()["token"],
                    ),
                    n,
                )
                for n in users
            ]
            time.sleep(1)  # every stream subscribed
            runs = []
            for attempt in range(3):
                message = f"benchmark {attempt} {time.time()}"
                started = time.monotonic()
                response = admin.api("POST", "hubforge/broadcast", json={"message": message})
                call = time.monotonic() - started
                arrivals = []
                for listener in listeners:
                    event = listener.wait_for(message, timeout=10)
                    assert event is not None, "a lab never got the message"
                    arrivals.append(listener.arrived[message] - started)
                delivered = response.json()["delivered"]
                runs.append(max(arrivals))
                print(
                    f"run {attempt + 1}: API answered in {call:.2f} s ({delivered}/{labs} delivered); "
                    f"first lab {min(arrivals):.2f} s, last lab {max(arrivals):.2f} s"
                )
            print(
                f"time until the last of {labs} labs had the message: median {statistics.median(runs):.2f} s (target: "
                "within 1 s at 100 labs)"
            )
            for listener in listeners:
                listener.close()
        finally:
            stop_stack(live)


if __name__ == "__main__":
    main()
