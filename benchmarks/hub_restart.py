"""Hub restart benchmark: what users' open labs see while the hub crashes, and while it restarts.

Run: python benchmarks/hub_restart.py [--users 5] [--runs 3]   (needs the images of `invoke build`; starts and removes
its own stack)
Starts N users' labs. For each, one thread keeps a kernel's websocket open and runs a cell every 200 ms on it, and
another GETs the lab's /api/contents every 100 ms through the proxy. Then, --runs times each:
- crash: the hub's process is SIGKILLed from the host, and Docker's restart policy brings it back;
- restart: `docker restart` of the hub container (a graceful stop and start).
Prints per event and as medians: the hub's downtime (failed /hub/health), the lab requests that failed, the
websockets that closed, and the longest stall of a websocket (the longest time between two of its replies); then the
hub's and the proxy's memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import requests  # noqa: E402

from tests.support.helpers import positive, wait_until  # noqa: E402
from tests.support.hubclient import HubAPI, KernelClient  # noqa: E402
from tests.support.livestack import approved_user, claim_admin, start_stack, stop_stack  # noqa: E402
from tests.support.loadsim import memory_bytes  # noqa: E402

PROBE_INTERVAL = 0.1
CELL_INTERVAL = 0.2


class Window:
    """Counts what failed between start() and stop(); one per event."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = False
        self.failed = 0
        self.closed = 0
        self.stall = 0.0
        self.hub_down = 0.0

    def note(self, **add: float) -> None:
        with self.lock:
            if not self.open:
                return
            for key, value in add.items():
                if key in ("stall", "hub_down"):
                    setattr(self, key, max(getattr(self, key), value))
                else:
                    setattr(self, key, getattr(self, key) + value)


class LabProber(threading.Thread):
    def __init__(self, api: HubAPI, user: str, window: list[Window], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.api, self.user, self.window, self.stop = api, user, window, stop

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                ok = self.api.request("GET", f"user/{self.user}/api/contents", timeout=5).status_code == 200
            except requests.RequestException:
                ok = False
            if not ok:
                self.window[0].note(failed=1)
            time.sleep(PROBE_INTERVAL)


class CellRunner(threading.Thread):
    """A cell every CELL_INTERVAL on one open websocket; a closed one is opened again (and counted)."""

    def __init__(self, api: HubAPI, user: str, window: list[Window], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.kernel = KernelClient(api, user)
        self.window, self.stop = window, stop

    def run(self) -> None:
        asyncio.run(self.loop())

    async def loop(self) -> None:
        connection = await self.kernel._connect(30)
        last = time.monotonic()
        while not self.stop.is_set():
            try:
                await self.kernel._run(connection, "1", 30)
            except Exception:  # noqa: BLE001 -- closed (WebSocketClosedError, None read) or no answer in time
                self.window[0].note(closed=1)
                while not self.stop.is_set():
                    try:
                        connection = await self.kernel._connect(5)
                        break
                    except Exception:  # noqa: BLE001 -- the proxy or the hub is not back yet
                        await asyncio.sleep(0.2)
                continue
            now = time.monotonic()
            self.window[0].note(stall=now - last)
            last = now
            await asyncio.sleep(CELL_INTERVAL)
        connection.close()


def hub_down_time(url: str, since: float, window: Window, timeout: float = 120) -> None:
    """Until /hub/health answers again: the time since the event."""
    session = requests.Session()
    session.trust_env, session.verify = False, False
    while time.monotonic() - since < timeout:
        try:
            if session.get(url, timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(PROBE_INTERVAL)
    window.hub_down = time.monotonic() - since


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=positive, default=5)
    parser.add_argument("--runs", type=positive, default=3)
    args = parser.parse_args()
    results: dict[str, list[Window]] = {"crash": [], "restart": []}
    with tempfile.TemporaryDirectory(prefix="hubforge-restart-bench-") as tmp:
        live = start_stack(Path(tmp), {"LAB_MEM_LIMIT": "1G"})
        stop = threading.Event()
        window = [Window()]
        try:
            admin = claim_admin(live)
            threads: list[threading.Thread] = []
            for i in range(args.users):
                name = f"ws{i}"
                _, api = approved_user(live, admin, name)
                api.start(name)
                threads += [LabProber(api, name, window, stop), CellRunner(api, name, window, stop)]
            for thread in threads:
                thread.start()
            time.sleep(3)
            health = f"{live.url}hub/health"
            for run in range(args.runs):
                for event in ("crash", "restart"):
                    window[0] = current = Window()
                    current.open = True
                    hub = live.hub()
                    since = time.monotonic()
                    if event == "crash":
                        os.kill(hub.attrs["State"]["Pid"], signal.SIGKILL)
                    else:
                        hub.restart(timeout=20)
                    hub_down_time(health, since, current)
                    wait_until(
                        lambda: live.hub().attrs["State"].get("Health", {}).get("Status") == "healthy",
                        120,
                        "the hub to be healthy",
                    )
                    time.sleep(2)  # what breaks late (a lab's token check) is counted too
                    current.open = False
                    results[event].append(current)
                    print(
                        f"run {run + 1} {event:8s} hub down {current.hub_down:5.1f} s  lab requests failed "
                        f"{current.failed:4d}  websockets closed {current.closed:3d}  longest websocket stall "
                        f"{current.stall:5.2f} s",
                        flush=True,
                    )
            for name, container in (("hub", live.hub()), ("proxy", live.stack.proxy_container())):
                if container is not None:
                    container = (
                        container if hasattr(container, "stats") else docker.from_env().containers.get(container["Id"])
                    )
                    used = memory_bytes(container.stats(stream=False, one_shot=True)) / 2**20
                    print(f"memory of the {name} with {args.users} labs open: {used:.0f} MiB", flush=True)
        finally:
            stop.set()
            stop_stack(live)
    print(f"\n{args.users} users, medians of {args.runs} runs:")
    for event, windows in results.items():
        if not windows:
            continue

        def med(key: str, of: list[Window] = windows) -> float:
            return statistics.median(getattr(w, key) for w in of)

        print(
            f"  {event:8s} hub down {med('hub_down'):5.1f} s  lab requests failed {med('failed'):5.1f}  websockets "
            f"closed {med('closed'):4.1f}  longest websocket stall {med('stall'):5.2f} s"
        )


if __name__ == "__main__":
    main()
