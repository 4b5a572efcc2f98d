"""The load simulator of benchmarks/load.py on a live stack: three users take a browser's whole path.

The stack also runs with LAB_SERVER_PROXY=1, which turns jupyter-server-proxy on in the labs; and a 30-user
arrival meets a hub crash."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
import requests

from ..support.helpers import WEB_APP, wait_until
from ..support.hubclient import HubSession, KernelClient, plain_get
from ..support.livestack import PASSWORD, approved_user
from ..support.loadsim import PHASES, Plan, Record, ramp, storm

pytestmark = pytest.mark.integration
STACK_ENV = {"LAB_SERVER_PROXY": "1", "LOGIN_ADDRESS_LIMIT": "1000"}  # 30 signups come from this one address
USERS = ["sim0", "sim1", "sim2"]


@pytest.fixture(scope="module")
def users(live, admin):
    for name in USERS:
        assert HubSession(live.url).signup(name, PASSWORD).status_code == 200
        admin.approve(name)
    return [(name, PASSWORD) for name in USERS]


def test_three_users_log_in_spawn_compute_and_stop(live, admin_api, users):
    record = Record()
    asyncio.run(asyncio.wait_for(ramp(live.url, users, 1.0, Plan(session_s=2, think_s=1), record), 300))
    summary = record.summary()
    assert record.failures == {}, summary
    assert summary["completed"] == 3
    assert set(summary["phases"]) == set(PHASES)
    assert all(phase["ok"] >= 3 for phase in summary["phases"].values())
    assert summary["phases"]["execute"]["ok"] >= 6  # a cell at the start and at least one more in the session
    for name in USERS:  # the simulator's stop went through: nothing is left running
        assert admin_api.user(name)["servers"] == {}


def test_a_wrong_password_is_a_login_failure_with_its_reason(live, users):
    record = Record()
    asyncio.run(asyncio.wait_for(ramp(live.url, [("sim0", "not-the-password-1")], 0, Plan(session_s=0), record), 60))
    assert record.completed == 0
    assert set(record.failures) == {"login"}
    ((kind, message),) = record.first_error.items()
    assert kind[0] == "login" and "invalid" in message.lower(), message


def test_a_storm_posts_every_login_at_once(live, users):
    record = Record()
    seconds = asyncio.run(asyncio.wait_for(storm(live.url, users, record, 60), 120))
    assert record.failures == {} and record.completed == 3
    assert len(record.durations["login"]) == 3 and seconds >= max(record.durations["login"]) * 0.99


def test_with_the_server_proxy_on_a_web_app_in_the_lab_is_reached_at_its_port(live, admin):
    api = approved_user(live, admin, "webby")[1]
    api.start("webby")
    assert KernelClient(api, "webby").execute(WEB_APP).strip() == "started"
    page = wait_until(
        lambda: (r := api.request("GET", "user/webby/proxy/8050/")).status_code == 200 and r,
        30,
        "the lab's web app through /proxy/8050/",
    )
    assert "Directory listing" in page.text
    api.stop("webby")


# What a lab serves once its user is in: none of it needs the hub (the lab checked the user's token at the handshake).
LAB_PHASES = {"kernel", "execute", "kernel-stop"}


def test_a_hub_crash_during_an_arrival_fails_only_what_needs_the_hub(live, admin):
    """Issue 32, part 1: 30 users arrive over 20 s, and 12 s in the hub's process is SIGKILLed (Docker brings it back).
    Logins, spawns and lab handshakes under way may fail: they need the hub. No cell of a user already in their lab
    fails, and cells run while the hub is down."""
    names = [f"wave{i}" for i in range(30)]
    for name in names:
        assert HubSession(live.url).signup(name, PASSWORD).status_code == 200
        admin.approve(name)
    record = Record()
    window: dict[str, int | float | str] = {}

    def crash() -> None:
        time.sleep(12)
        hub = live.hub()
        window["cells_before"] = len(record.durations.get("execute", []))
        os.kill(hub.attrs["State"]["Pid"], signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < 120:
            try:
                if plain_get(f"{live.url}hub/health").status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        window["down_s"] = time.monotonic() - killed
        window["cells_after"] = len(record.durations.get("execute", []))

    killer = threading.Thread(target=crash, daemon=True)
    killer.start()
    plan = Plan(session_s=30, think_s=1)
    asyncio.run(asyncio.wait_for(ramp(live.url, [(n, PASSWORD) for n in names], 20, plan, record), 480))
    killer.join(timeout=130)
    summary = record.summary()
    assert "down_s" in window, f"the hub was not killed: {window}"
    assert not LAB_PHASES & set(record.failures), f"lab requests failed with the hub down: {summary}"
    assert window["cells_after"] - window["cells_before"] >= 5, f"few cells ran while the hub was down: {window}"
    assert live.hub().attrs["RestartCount"] >= 1, "Docker did not restart the hub"
    assert record.completed >= 5, summary  # the users in their labs before the crash finished their session
