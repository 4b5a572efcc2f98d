"""Login throttling: growing waits per account and address, a budget per address, and whose address counts."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import bcrypt
import pytest

from hub_ext.auth.passwords import password_matches
from hub_ext.auth.throttle import ProxyHost, Throttle, client_address, describe_wait


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
    import hub_ext.auth.throttle as module

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
    assert (
        client_address(request("172.18.0.2", "172.18.0.2", {"X-Forwarded-For": "1.2.3.4, 198.51.100.7"}))
        == "198.51.100.7"
    )


def test_a_spoofed_header_does_not_move_the_client():
    """X-Real-Ip would be believed by tornado's xheaders: an attacker could aim failures at the admin's address."""
    spoof = {"X-Forwarded-For": "198.51.100.7", "X-Real-Ip": "192.0.2.10"}
    assert client_address(request("172.18.0.2", "172.18.0.2", spoof)) == "198.51.100.7"
    # a lab talking to the hub's port directly is not the proxy: its headers are ignored
    assert client_address(request("172.18.0.5", "172.18.0.2", {"X-Forwarded-For": "192.0.2.10"})) == "172.18.0.5"


def test_on_swarm_the_proxy_services_address_is_trusted_and_a_labs_is_not():
    """The proxy is a service of its own there: without this, every login would come from the proxy's address and
    share one address budget."""
    now = [0.0]
    looked = []
    proxy = ProxyHost("proxy", resolve=lambda name: looked.append(name) or {"10.0.1.7"}, clock=lambda: now[0])
    forwarded = {"X-Forwarded-For": "198.51.100.7"}
    assert client_address(request("10.0.1.7", "10.0.1.5", forwarded), proxy) == "198.51.100.7"
    assert client_address(request("10.0.1.9", "10.0.1.5", forwarded), proxy) == "10.0.1.9"  # a lab, or anyone else
    assert client_address(request("10.0.1.7", "10.0.1.5", forwarded)) == "10.0.1.7"  # no proxy named: Compose
    assert looked == ["proxy"]  # once, within the cache's time
    now[0] += 31
    client_address(request("10.0.1.7", "10.0.1.5", forwarded), proxy)
    assert looked == ["proxy", "proxy"]


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
        return await asyncio.gather(
            *(password_matches(p, hashed) for p in ["a-Long-passw0rd!", "wrong"])
        ), threading.current_thread()

    results, loop_thread = asyncio.run(scenario())
    assert results == [True, False]
    assert len(threads) == 2 and loop_thread not in threads and all(t.name.startswith("bcrypt") for t in threads)


def test_an_attempt_is_counted_when_it_is_let_through(clock):
    """Reserved before bcrypt runs: of 50 guesses at once from one address (none answered yet), the budget's go
    ahead."""
    throttle = Throttle(free_failures=100, address_budget=40, clock=clock)
    waits = [throttle.reserve(f"storm{number}", "198.51.100.2") for number in range(50)]
    assert waits[:40] == [0] * 40 and all(wait == 60 for wait in waits[40:])


def test_an_accounts_free_failures_are_reserved_too(clock):
    throttle = Throttle(free_failures=5, address_budget=1000, clock=clock)
    waits = [throttle.reserve("admin", "203.0.113.7") for _ in range(20)]
    assert waits[:5] == [0] * 5 and all(wait >= 1 for wait in waits[5:])
    assert throttle.reserve("admin", "192.0.2.10") == 0  # another address: unaffected


def test_a_success_gives_its_reservation_back(clock):
    """A class behind one NAT logging in: right passwords spend nothing, and failures still have the whole budget."""
    throttle = Throttle(free_failures=100, address_budget=3, clock=clock)
    for number in range(10):
        assert throttle.reserve(f"pupil{number}", "192.0.2.1") == 0
        throttle.succeeded(f"pupil{number}", "192.0.2.1")
    assert [throttle.reserve("someone", "192.0.2.1") for _ in range(4)] == [0, 0, 0, 60]


def test_a_refused_attempt_spends_nothing(clock):
    throttle = Throttle(free_failures=100, address_budget=2, window=60, clock=clock)
    throttle.reserve("a", "192.0.2.1"), throttle.reserve("b", "192.0.2.1")
    for _ in range(100):
        clock.now += 0.5
        assert throttle.reserve("c", "192.0.2.1") > 0
    clock.now += 11  # the first two are a window old: the refused ones never counted
    assert throttle.reserve("c", "192.0.2.1") == 0


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("bob", "bob"),
        ("zoë.müller@example.org", "zoë.müller@example.org"),
        ("\x1b[2J\x1b[31madmin", "\\x1b[2J\\x1b[31madmin"),  # would clear and colour the operator's terminal
        ("eve\nINFO audit: approval by=admin", "eve\\nINFO audit: approval by=admin"),  # a forged second line
        ("ad\u200bmin", "ad\\u200bmin"),  # looks like admin
        ("a\u00a0b\u2028c", "a\\xa0b\\u2028c"),  # separators other than the space
        ("back\\x1b", "back\\\\x1b"),  # a typed backslash cannot pass for an escape
    ],
)
def test_names_are_escaped_for_log_lines(raw, shown):
    from hub_ext.auth.rules import loggable

    assert loggable(raw) == shown


def authenticator(budget: int):
    from jupyterhub import orm

    from hub_ext.authenticators.native import HubforgeAuthenticator

    db = orm.new_session_factory("sqlite:///:memory:")()
    return HubforgeAuthenticator(_deprecated_db_session=db, admin_users={"admin"}, login_address_limit=budget)


def test_simultaneous_logins_check_no_more_passwords_than_the_budget(monkeypatch):
    """The hub's own login path, 12 wrong passwords at once from one address with a budget of 3: 3 bcrypt checks."""
    from hub_ext.auth.throttle import LoginRefused

    checks = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda *args: checks.append(1) or real(*args))  # counts, then checks
    auth = authenticator(budget=3)
    handler = SimpleNamespace(request=request("172.18.0.2", "172.18.0.2", {"X-Forwarded-For": "198.51.100.7"}))

    async def guess(number: int):
        try:
            return await auth.authenticate(handler, {"username": f"storm{number}", "password": "wrong"})
        except LoginRefused as exc:
            return exc

    async def storm():
        return await asyncio.wait_for(asyncio.gather(*(guess(number) for number in range(12))), 60)

    answers = asyncio.run(storm())
    assert len(checks) == 3 and answers.count(None) == 3
    assert all(
        isinstance(answer, LoginRefused) and "try again in" in str(answer) for answer in answers if answer is not None
    )


def test_a_throttled_login_logs_the_name_escaped(caplog):
    from hub_ext.auth.throttle import LoginRefused

    auth = authenticator(budget=1)
    handler = SimpleNamespace(request=request("172.18.0.2", "172.18.0.2", {"X-Forwarded-For": "198.51.100.7"}))
    auth.throttle.failed("x", "198.51.100.7")  # the address's budget is spent
    auth.log.addHandler(caplog.handler)  # the authenticator's logger (JupyterHub's) does not propagate
    try:
        with pytest.raises(LoginRefused):
            asyncio.run(auth.authenticate(handler, {"username": "\x1b[2Jroot\nforged line", "password": "wrong"}))
    finally:
        auth.log.removeHandler(caplog.handler)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "login for \\x1b[2jroot\\nforged line from 198.51.100.7 throttled" in logged
    assert "\x1b" not in logged and "\nforged" not in logged
