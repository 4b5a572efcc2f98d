"""A user simulator that speaks the hub's real protocol, as a browser does: the engine of benchmarks/load.py.

Each simulated user, on their own cookie jar:
  login    GET /hub/login (the form's _xsrf), POST it                          -> 302
  spawn    follow the redirect to /hub/spawn and /hub/spawn-pending/<name>, then read the progress
           event stream (what the pending page's script reads) until it says ready
  lab      follow the server's URL through the lab's own OAuth handshake (the hub's
           /hub/api/oauth2/authorize, the lab's oauth_callback) to the JupyterLab page
  kernel   POST <lab>/api/kernels with the lab's _xsrf                         -> 201
  execute  an execute_request over the kernel's websocket; the reply's value is checked
           (again every `think` seconds while the session lasts)
  kernel-stop  DELETE <lab>/api/kernels/<id> with the lab's _xsrf             -> 204
  stop     DELETE /hub/api/users/<name>/server with the hub's _xsrf, until the hub says it stopped

Every wait is bounded by a timeout and every loop by a count. A bystander process polls /hub/health
all the while, and a sampler reads the hub's and the labs' CPU and memory from their cgroups.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import multiprocessing
import re
import statistics
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx

from hub_ext.hub import cgroups
from tests.support.cpucost import LabFinder

PHASES = ("login", "spawn", "lab", "kernel", "execute", "kernel-stop", "stop")
MAX_REDIRECTS = 12
XSRF_INPUT = re.compile(r'name="_xsrf" value="([^"]+)"')


class Refused(Exception):
    """A step answered what a browser would not accept; `kind` groups failures of the same sort."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


@dataclass
class Record:
    """Durations and failures by phase; failures are counted by kind, with the first message of each."""

    durations: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, Counter] = field(default_factory=dict)
    first_error: dict[tuple[str, str], str] = field(default_factory=dict)
    completed: int = 0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except Exception as exc:
            kind = exc.kind if isinstance(exc, Refused) else type(exc).__name__
            self.failures.setdefault(name, Counter())[kind] += 1
            self.first_error.setdefault((name, kind), str(exc)[:300] or repr(exc))
            raise
        self.durations.setdefault(name, []).append(time.monotonic() - started)

    def summary(self) -> dict[str, Any]:
        phases = {}
        for name in sorted(set(self.durations) | set(self.failures), key=lambda p: (PHASES + (p,)).index(p)):
            times = self.durations.get(name, [])
            phases[name] = {
                "ok": len(times),
                "failed": sum(self.failures.get(name, Counter()).values()),
                "p50_s": round(statistics.median(times), 3) if times else None,
                "p95_s": round(percentile(times, 0.95), 3) if times else None,
                "max_s": round(max(times), 3) if times else None,
                "errors": [
                    {"kind": kind, "count": count, "first": self.first_error[(name, kind)]}
                    for kind, count in self.failures.get(name, Counter()).most_common()
                ],
            }
        return {"completed": self.completed, "phases": phases}


# -- one browser ------------------------------------------------------------------------------------------
class Browser:
    """One user's cookie jar and connections, following redirects by hand so that each hop is checked."""

    def __init__(self, base: str, timeout: float) -> None:
        self.base = base
        self.http = httpx.AsyncClient(
            verify=False, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout, connect=10)
        )

    async def close(self) -> None:
        await self.http.aclose()

    def cookie(self, name: str, url: str) -> str:
        """The value of cookie `name` that a browser would send to `url` (its host and path)."""
        request = urllib.request.Request(url)
        self.http.cookies.jar.add_cookie_header(request)
        header = request.get_header("Cookie") or ""
        for pair in header.split("; "):
            key, _, value = pair.partition("=")
            if key == name:
                return value
        return ""

    def cookie_header(self, url: str) -> str:
        request = urllib.request.Request(url.replace("wss://", "https://", 1).replace("ws://", "http://", 1))
        self.http.cookies.jar.add_cookie_header(request)
        return request.get_header("Cookie") or ""

    async def get(self, url: str, **kwargs) -> httpx.Response:
        return await self.http.get(urljoin(self.base, url), **kwargs)

    async def follow(self, url: str, stop: Callable[[str, httpx.Response], bool]) -> tuple[str, httpx.Response]:
        """GET `url` and its redirects until `stop(url, response)` holds; a 4xx/5xx or a loop is refused."""
        url = urljoin(self.base, url)
        for _ in range(MAX_REDIRECTS):
            response = await self.http.get(url)
            if stop(url, response):
                return url, response
            if response.status_code in (301, 302, 303, 307, 308):
                url = urljoin(url, response.headers["location"])
                continue
            raise Refused(
                f"HTTP {response.status_code}",
                f"GET {urlparse(url).path} answered {response.status_code}: {response.text[:160]!r}",
            )
        raise Refused("redirect loop", f"more than {MAX_REDIRECTS} redirects, last at {url}")


# -- the protocol, step by step -----------------------------------------------------------------------------
async def login(browser: Browser, name: str, password: str, form: str | None = None) -> str:
    """Post the login form (fetched now unless `form` holds its _xsrf); returns where the hub sends us."""
    if form is None:
        form = await login_form(browser)
    response = await browser.http.post(
        urljoin(browser.base, "hub/login"), data={"_xsrf": form, "username": name, "password": password}
    )
    if response.status_code != 302:
        error = re.search(r'class="(?:alert|login_error)[^"]*"[^>]*>\s*([^<]+)', response.text)
        raise Refused(f"HTTP {response.status_code}", (error.group(1).strip() if error else response.text[:160]))
    return response.headers["location"]


async def login_form(browser: Browser) -> str:
    page = await browser.get("hub/login")
    if page.status_code != 200:
        raise Refused(f"HTTP {page.status_code}", f"the login page answered {page.status_code}")
    match = XSRF_INPUT.search(page.text)
    return match.group(1) if match else browser.cookie("_xsrf", urljoin(browser.base, "hub/login"))


async def spawn(browser: Browser, name: str, after_login: str, timeout: float) -> str:
    """From the login's redirect to a ready server, as the spawn-pending page sees it; returns the server's URL."""
    url, page = await browser.follow(
        after_login,
        lambda u, r: r.status_code == 200 or (r.status_code == 302 and "/user/" in r.headers.get("location", "")),
    )
    if page.status_code == 302:  # already running: the hub sends us straight to the server
        return urljoin(url, page.headers["location"])
    if "/spawn-pending/" not in urlparse(url).path:
        raise Refused(
            "no pending page", f"the spawn ended on {urlparse(url).path}, not /hub/spawn-pending/: {page.text[:160]!r}"
        )
    progress = urljoin(browser.base, f"hub/api/users/{name}/server/progress")
    deadline = time.monotonic() + timeout
    async with browser.http.stream(
        "GET", progress, headers={"Accept": "text/event-stream"}, timeout=httpx.Timeout(timeout, connect=10)
    ) as stream:
        if stream.status_code != 200:
            raise Refused(f"HTTP {stream.status_code}", f"the progress stream answered {stream.status_code}")
        async for line in stream.aiter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event.get("failed"):
                raise Refused("spawn failed", event.get("message", "no reason given"))
            if event.get("ready"):
                return urljoin(url, event["url"])
    raise Refused("spawn timeout", f"no ready event within {timeout:.0f} s")


async def open_lab(browser: Browser, server_url: str) -> str:
    """Follow the server's URL through the lab's OAuth handshake to JupyterLab; returns the lab's base URL."""
    hops: list[str] = []

    def arrived(url: str, response: httpx.Response) -> bool:
        hops.append(urlparse(url).path)
        return response.status_code == 200

    url, page = await browser.follow(server_url, arrived)
    if not any(path.endswith("/oauth_callback") for path in hops):
        raise Refused("no OAuth handshake", f"reached {urlparse(url).path} without the lab's oauth_callback: {hops}")
    if "/lab" not in urlparse(url).path:
        raise Refused("not JupyterLab", f"ended on {urlparse(url).path}: {page.text[:160]!r}")
    path = urlparse(url).path
    prefix = path[: path.index("/lab")] + "/"
    return urljoin(url, prefix)


async def start_kernel(browser: Browser, lab: str) -> str:
    response = await browser.http.post(
        lab + "api/kernels", json={"name": "python3"}, headers={"X-XSRFToken": browser.cookie("_xsrf", lab)}
    )
    if response.status_code != 201:
        raise Refused(
            f"HTTP {response.status_code}",
            f"starting a kernel answered {response.status_code}: {response.text[:160]!r}",
        )
    return response.json()["id"]


class KernelChannel:
    """The kernel's websocket, opened with the browser's lab cookies, as JupyterLab opens it."""

    def __init__(self, browser: Browser, lab: str, kernel: str, timeout: float) -> None:
        self.browser, self.timeout = browser, timeout
        self.url = (
            (lab + f"api/kernels/{kernel}/channels").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        )
        self.session = uuid.uuid4().hex
        self.connection = None

    async def open(self) -> None:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        lab = self.url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
        request = HTTPRequest(
            self.url,
            validate_cert=False,
            connect_timeout=10,
            request_timeout=self.timeout,
            headers={"Cookie": self.browser.cookie_header(lab), "X-XSRFToken": self.browser.cookie("_xsrf", lab)},
        )
        self.connection = await websocket_connect(request)

    async def execute(self, code: str) -> str:
        """Run `code`; its result's text/plain and stdout, once the kernel is idle again."""
        msg_id = uuid.uuid4().hex
        self.connection.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "session": self.session,
                        "username": "",
                        "msg_type": "execute_request",
                        "version": "5.3",
                        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "buffers": [],
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        output, replied, idle = [], False, False
        deadline = time.monotonic() + self.timeout
        for _ in range(10_000):  # bounded: a reply is a handful of messages
            if replied and idle:
                return "".join(output)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            raw = await asyncio.wait_for(self.connection.read_message(), remaining)
            if raw is None:
                raise Refused("websocket closed", f"the kernel's websocket closed; output so far {output!r}")
            message = json.loads(raw)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["header"]["msg_type"], message["content"]
            if kind == "stream":
                output.append(content["text"])
            elif kind == "execute_result":
                output.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                raise Refused("kernel error", f"{content['ename']}: {content['evalue']}")
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        raise Refused("execute timeout", f"no reply within {self.timeout:.0f} s; output so far {output!r}")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


async def stop_kernel(browser: Browser, lab: str, kernel: str) -> None:
    response = await browser.http.delete(
        lab + f"api/kernels/{kernel}", headers={"X-XSRFToken": browser.cookie("_xsrf", lab)}
    )
    if response.status_code != 204:
        raise Refused(
            f"HTTP {response.status_code}",
            f"stopping the kernel answered {response.status_code}: {response.text[:160]!r}",
        )


async def stop_server(browser: Browser, name: str, timeout: float) -> None:
    api = urljoin(browser.base, f"hub/api/users/{name}")
    response = await browser.http.delete(api + "/server", headers={"X-XSRFToken": browser.cookie("_xsrf", api)})
    if response.status_code not in (202, 204):
        raise Refused(
            f"HTTP {response.status_code}",
            f"stopping the server answered {response.status_code}: {response.text[:160]!r}",
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        user = await browser.http.get(api)
        if user.status_code == 200 and not user.json().get("servers"):
            return
        await asyncio.sleep(0.25)
    raise Refused("stop timeout", f"the server still ran {timeout:.0f} s after the stop")


def check_sum(output: str, n: int) -> None:
    if output.strip() != str(n * (n - 1) // 2):
        raise Refused("wrong result", f"sum(range({n})) gave {output.strip()!r}")


@dataclass(frozen=True)
class Plan:
    """What each simulated user does and how long each step may take."""

    session_s: float = 10.0  # time between the first cell and the kernel's stop
    think_s: float = 5.0  # a cell every this many seconds during the session
    spawn_timeout_s: float = 300.0
    step_timeout_s: float = 60.0
    stop: bool = True  # stop the kernel and the server at the end
    hold_stops: bool = False  # no stop before every user has run their first cell (or failed): arrivals alone


class Arrivals:
    """Counts users until each has run their first cell or failed before it; `done` is set then (the arrival
    window's end, which benchmarks/load.py's CPU meter closes on)."""

    def __init__(self, expected: int, on_first_cell: Callable[[str], None], on_done: Callable[[Arrivals], None]):
        self.expected, self.on_first_cell, self.on_done = expected, on_first_cell, on_done
        self.cells = self.lost = self.stops_within = 0
        self.done = asyncio.Event()

    def first_cell(self, name: str) -> None:
        self.cells += 1
        self.on_first_cell(name)
        self.settle()

    def failed(self) -> None:
        self.lost += 1
        self.settle()

    def stopping(self) -> None:
        """A server is about to stop: counted when that is within the window."""
        self.stops_within += 0 if self.done.is_set() else 1

    def settle(self) -> None:
        if self.cells + self.lost >= self.expected and not self.done.is_set():
            self.done.set()
            self.on_done(self)


async def user_flow(
    base: str, name: str, password: str, plan: Plan, record: Record, arrivals: Arrivals | None = None
) -> None:
    """One user's whole visit; the first failing phase ends it (and is recorded)."""
    browser = Browser(base, plan.step_timeout_s)
    channel, arrived = None, False
    try:
        with record.phase("login"):
            after_login = await login(browser, name, password)
        with record.phase("spawn"):
            server = await spawn(browser, name, after_login, plan.spawn_timeout_s)
        with record.phase("lab"):
            lab = await open_lab(browser, server)
        with record.phase("kernel"):
            kernel = await start_kernel(browser, lab)
            channel = KernelChannel(browser, lab, kernel, plan.step_timeout_s)
            await channel.open()
        session_end = time.monotonic() + plan.session_s
        for cell in range(1 + int(plan.session_s // max(plan.think_s, 0.1))):
            n = 1000 + cell
            with record.phase("execute"):
                check_sum(await channel.execute(f"sum(range({n}))"), n)
            if arrivals is not None and not arrived:
                arrived = True
                arrivals.first_cell(name)
            if time.monotonic() + plan.think_s > session_end:
                break
            await asyncio.sleep(plan.think_s)
        if plan.stop:
            if arrivals is not None:
                if plan.hold_stops:  # bounded: every other user's phases are, and so is the whole run
                    await arrivals.done.wait()
                arrivals.stopping()
            channel.close()
            channel = None
            with record.phase("kernel-stop"):
                await stop_kernel(browser, lab, kernel)
            with record.phase("stop"):
                await stop_server(browser, name, plan.step_timeout_s)
        record.completed += 1
    except Exception:  # noqa: BLE001 -- recorded by the phase that failed; this user's visit ends here
        if arrivals is not None and not arrived:
            arrivals.failed()
    finally:
        if channel is not None:
            channel.close()
        await browser.close()


async def ramp(
    base: str,
    users: list[tuple[str, str]],
    ramp_s: float,
    plan: Plan,
    record: Record,
    arrivals: Callable[[int], Arrivals] | None = None,
) -> None:
    """Start each user's visit at an even spacing over `ramp_s` seconds, and wait for every one; `arrivals` makes
    the tracker of their first cells (inside the event loop, which its Event belongs to)."""
    tracker = arrivals(len(users)) if arrivals is not None else None
    spacing = ramp_s / max(1, len(users) - 1) if len(users) > 1 else 0.0

    async def delayed(index: int, name: str, password: str) -> None:
        await asyncio.sleep(index * spacing)
        await user_flow(base, name, password, plan, record, tracker)

    await asyncio.gather(*(delayed(i, name, password) for i, (name, password) in enumerate(users)))


async def storm(base: str, users: list[tuple[str, str]], record: Record, timeout: float) -> float:
    """Every user's login posted at the same moment (each with its form already open); returns the time
    until the last had its answer."""
    browsers = [Browser(base, timeout) for _ in users]
    try:
        forms = await asyncio.gather(*(login_form(b) for b in browsers))
        gate = asyncio.Event()

        async def one(browser: Browser, name: str, password: str, form: str) -> None:
            await gate.wait()
            try:
                with record.phase("login"):
                    await login(browser, name, password, form)
                record.completed += 1
            except Exception:  # noqa: BLE001 -- recorded
                pass

        tasks = [asyncio.ensure_future(one(b, n, p, f)) for b, (n, p), f in zip(browsers, users, forms)]
        await asyncio.sleep(0.2)  # every task waits at the gate
        started = time.monotonic()
        gate.set()
        await asyncio.gather(*tasks)
        return time.monotonic() - started
    finally:
        await asyncio.gather(*(b.close() for b in browsers))


# -- the bystander and the samplers ---------------------------------------------------------------------------
def _bystander(url: str, interval: float, stop, results) -> None:
    """In its own process, so the simulator's own work never delays it: GET /hub/health every `interval`."""
    import os

    import requests

    from tests.support import localdns

    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # a user's normal priority, whatever the simulator's (root may lower it)
    except OSError:
        pass  # not root: it keeps the simulator's niceness, and says less about the hub than it could
    localdns.install()
    session = requests.Session()
    session.verify, session.trust_env = False, False
    import urllib3

    urllib3.disable_warnings()
    latencies, errors, worst = [], [], []
    began = time.monotonic()
    while not stop.is_set():
        started = time.monotonic()
        try:
            status = session.get(url, timeout=30).status_code
            if status != 200:
                errors.append(f"HTTP {status}")
        except requests.RequestException as exc:
            errors.append(type(exc).__name__)
        latencies.append(time.monotonic() - started)
        worst = sorted(worst + [(latencies[-1], started - began)], reverse=True)[:5]
        stop.wait(interval)
    results.put({"latencies": latencies, "errors": errors, "worst": worst})


class Bystander:
    """A user who only loads a page now and then: the worst wait they saw is the hub's responsiveness."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop, self.results = context.Event(), context.Queue()
        self.process = context.Process(target=_bystander, args=(url, interval, self.stop, self.results), daemon=True)

    def __enter__(self) -> Bystander:
        self.process.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()

    def result(self, timeout: float = 60) -> dict[str, Any]:
        self.stop.set()
        found = self.results.get(timeout=timeout)
        self.process.join(timeout)
        latencies = found["latencies"] or [0.0]
        return {
            "polls": len(found["latencies"]),
            "errors": len(found["errors"]),
            "first_error": found["errors"][0] if found["errors"] else None,
            "p50_ms": round(statistics.median(latencies) * 1000),
            "p99_ms": round(percentile(latencies, 0.99) * 1000),
            "max_ms": round(max(latencies) * 1000),
            "worst_at_s": [[round(latency * 1000), round(at, 1)] for latency, at in found["worst"]],
        }


def memory_bytes(stats: dict) -> int:
    """What `docker stats` shows as a container's memory: usage less the inactive page cache (cgroup v1 and v2)."""
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(0, memory.get("usage", 0) - cache)


class Sampler(threading.Thread):
    """Samples the hub's CPU and memory every `interval` s, and every lab's memory every `lab_interval` s, from their
    cgroup files on this host (hub_ext.hub.cgroups: the same figures as `docker stats`), so that no Docker call of
    the benchmark's own lands in the Docker CPU it measures."""

    def __init__(
        self, hub_id: str, root: Path = Path("/sys/fs/cgroup"), interval: float = 1.0, lab_interval: float = 5.0
    ) -> None:
        super().__init__(daemon=True)
        self.hub_id, self.root = hub_id, root
        self.labs = LabFinder(root, Path("/proc"))
        self.interval, self.lab_interval = interval, lab_interval
        self.done = threading.Event()
        self.hub_memory: list[int] = []
        self.hub_cpu: list[float] = []  # cores in use, averaged over each interval
        self.lab_peak: dict[str, int] = {}  # user -> their lab's highest memory seen
        self.lab_totals: list[tuple[int, int]] = []  # (labs running, their memory together)

    def run(self) -> None:
        last, last_lab = None, 0.0  # last: (when, the hub's CPU time in ns)
        for _ in range(1_000_000):  # bounded; ends when done is set
            if self.done.is_set():
                return
            started = time.monotonic()
            hub = cgroups.read(self.root, self.hub_id)
            if hub is not None:
                self.hub_memory.append(hub.memory_bytes)
                if last is not None and started > last[0]:
                    self.hub_cpu.append((hub.cpu_ns - last[1]) / 1e9 / (started - last[0]))
                last = (started, hub.cpu_ns)
            if started - last_lab >= self.lab_interval:
                last_lab = started
                self.sample_labs()
            self.done.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def sample_labs(self) -> None:
        total, running = 0, 0
        for container, user in self.labs.refresh().items():
            reading = cgroups.read(self.root, container)
            if reading is None:  # stopped meanwhile
                continue
            total, running = total + reading.memory_bytes, running + 1
            self.lab_peak[user] = max(reading.memory_bytes, self.lab_peak.get(user, 0))
        self.lab_totals.append((running, total))

    def summary(self) -> dict[str, Any]:
        self.done.set()
        self.join(30)
        mib = 2**20
        peaks = sorted(self.lab_peak.values())
        most = max(self.lab_totals, default=(0, 0))
        return {
            "hub_memory_peak_mib": round(max(self.hub_memory, default=0) / mib),
            "hub_cpu_peak_cores": round(max(self.hub_cpu, default=0.0), 2),
            "hub_cpu_mean_cores": round(statistics.mean(self.hub_cpu), 2) if self.hub_cpu else 0.0,
            "labs_seen": len(peaks),
            "lab_memory_p50_mib": round(statistics.median(peaks) / mib) if peaks else None,
            "lab_memory_max_mib": round(peaks[-1] / mib) if peaks else None,
            "labs_running_peak": most[0],
            "labs_memory_total_mib": round(most[1] / mib),
        }
