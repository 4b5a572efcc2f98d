"""Broadcast benchmark: 20 running labs, each with a listener on its event stream; one broadcast.

Run: python benchmarks/broadcast.py   (needs the images of `invoke build`; starts and removes its own stack)
Prints how long the API call took and when the first and the last lab had the message.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hubclient import EventListener, HubAPI  # noqa: E402
from tests.livestack import admin_api, claim_admin, start_stack, stop_stack  # noqa: E402

LABS = 20


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hubforge-broadcast-bench-") as tmp:
        live = start_stack(Path(tmp), {"LAB_MEM_LIMIT": "1G"})
        try:
            admin = claim_admin(live)
            api = admin_api(live, admin)
            users = [f"b{i:02d}" for i in range(LABS)]
            assert api.request("POST", "hub/api/users", json={"usernames": users}).status_code == 201
            with ThreadPoolExecutor(max_workers=LABS) as pool:
                list(pool.map(lambda name: api.start(name, timeout=300), users))
            listeners = [EventListener(HubAPI(live.url, api.request("POST", f"hub/api/users/{n}/tokens",
                                                                      json={"expires_in": 600}).json()["token"]), n)
                         for n in users]
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
                print(f"run {attempt + 1}: API answered in {call:.2f} s ({delivered}/{LABS} delivered); "
                      f"first lab {min(arrivals):.2f} s, last lab {max(arrivals):.2f} s")
            print(f"time until the last of {LABS} labs had the message: median {statistics.median(runs):.2f} s (target < 2 s)")
            for listener in listeners:
                listener.close()
        finally:
            stop_stack(live)


if __name__ == "__main__":
    main()
