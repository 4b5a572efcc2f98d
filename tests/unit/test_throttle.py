"""Login throttling: growing waits per account and address, a budget per address, and whose address counts."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import bcrypt
import pytest

from hub_ext.auth import client_address, password_matches
from hub_ext.throttle import Throttle, describe_wait


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_waits_grow_only_after_the_free_failures_and_stop_at_the_cap(clock):
    throttle = Throttle(free_failures=3, base_delay=1, max_delay=60, address_budget=1000, clock=clock)
    for _ in range(3):
        assert throttle.wait("admin", "10.0.0.9") == 0
        throttle.failed("admin", "10.0.0.9")
    assert throttle.wait("admin", "10.0.0.9") == 1
    waits = []
    for _ in range(8):
        clock.now += throttle.wait("admin", "10.0.0.9")
        throttle.failed("admin", "10.0.0.9")
        waits.append(throttle.wait("admin", "10.0.0.9"))
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60]


def test_an_attackers_failures_do_not_lock_the_account_out_elsewhere(clock):
    """The old lock-out counted per account: 5 wrong passwords from anywhere kept the admin out for 10 minutes."""
    throttle = Throttle(free_failures=5, max_delay=600, address_budget=1000, clock=clock)
    for _ in range(20):
        throttle.failed("admin", "203.0.113.7")
    assert throttle.wait("admin", "203.0.113.7") > 0
    assert throttle.wait("admin", "192.0.2.10") == 0


def test_a_success_clears_the_account_and_address(clock):
    throttle = Throttle(free_failures=2, address_budget=1000, clock=clock)
    for _ in range(2):
        throttle.failed("bob", "192.0.2.1")
    throttle.succeeded("bob", "192.0.2.1")
    assert throttle.wait("bob", "192.0.2.1") == 0


def test_the_address_budget_counts_failures_and_signups_over_a_window(clock):
    throttle = Throttle(free_failures=100, address_budget=5, window=60, clock=clock)
    for number in range(5):
        throttle.failed(f"user{number}", "198.51.100.2")  # spraying many accounts: each is fresh
    assert throttle.wait("someone-else", "198.51.100.2") == 60
    assert throttle.wait(None, "198.51.100.2") == 60  # signups from there wait too
    assert throttle.wait("someone-else", "198.51.100.3") == 0
    clock.now += 61
    assert throttle.wait("someone-else", "198.51.100.2") == 0


def test_memory_stays_bounded_under_a_spray_of_addresses(clock, monkeypatch):
    import hub_ext.throttle as module

    monkeypatch.setattr(module, "MAX_TRACKED", 100)
    throttle = Throttle(max_delay=10, window=10, clock=clock)
    for number in range(1000):
        clock.now += 1
        throttle.failed("admin", f"10.1.{number // 256}.{number % 256}")
    assert len(throttle._failures) + len(throttle._spent) < 200


def test_describe_wait():
    assert describe_wait(0.2) == "1 second" and describe_wait(42) == "42 seconds" and describe_wait(600) == "10 minutes"


def request(peer: str, local: str, headers: dict[str, str]):
    """What client_address reads of a tornado request: the raw peer, our socket's own address, the headers."""
    socket = SimpleNamespace(getsockname=lambda: (local, 8081))
    connection = SimpleNamespace(context=SimpleNamespace(address=(peer, 40000)), stream=SimpleNamespace(socket=socket))
    return SimpleNamespace(connection=connection, headers=headers, remote_ip=headers.get("X-Real-Ip", peer))


def test_the_proxys_forwarded_address_is_the_client():
    assert client_address(request("172.18.0.2", "172.18.0.2", {"X-Forwarded-For": "198.51.100.7"})) == "198.51.100.7"
    # a client's own X-Forwarded-For entries come first; the proxy appends the real one last
    assert client_address(request("172.18.0.2", "172.18.0.2", {"X-Forwarded-For": "1.2.3.4, 198.51.100.7"})) == "198.51.100.7"


def test_a_spoofed_header_does_not_move_the_client():
    """X-Real-Ip would be believed by tornado's xheaders: an attacker could aim failures at the admin's address."""
    spoof = {"X-Forwarded-For": "198.51.100.7", "X-Real-Ip": "192.0.2.10"}
    assert client_address(request("172.18.0.2", "172.18.0.2", spoof)) == "198.51.100.7"
    # a lab talking to the hub's port directly is not the proxy: its headers are ignored
    assert client_address(request("172.18.0.5", "172.18.0.2", {"X-Forwarded-For": "192.0.2.10"})) == "172.18.0.5"


def test_password_checks_run_off_the_event_loop(monkeypatch):
    """bcrypt takes ~0.4 s a check here; on the loop, 30 logins froze every page of the hub for 6.6 s."""
    hashed = bcrypt.hashpw(b"a-Long-passw0rd!", bcrypt.gensalt(rounds=4))
    threads = []
    real = bcrypt.checkpw

    def recording(password, hashed_password):
        threads.append(threading.current_thread())
        return real(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", recording)

    async def scenario():
        return await asyncio.gather(*(password_matches(p, hashed) for p in ["a-Long-passw0rd!", "wrong"])), threading.current_thread()

    results, loop_thread = asyncio.run(scenario())
    assert results == [True, False]
    assert len(threads) == 2 and loop_thread not in threads and all(t.name.startswith("bcrypt") for t in threads)
