"""Login and signup throttling that an attacker cannot turn into a lock-out.

Two limits, both kept in the hub's memory (a restart forgets them, as NativeAuthenticator's did):

- **Per account and client address**, growing delays. After `free_failures` failed logins for one
  account from one address, each further try from that address must wait `base_delay`, then twice as
  long, and so on up to `max_delay`. Another address is not affected: the right password from the
  admin's own machine still logs in while an attacker elsewhere is slowed down. A pending account's
  right password counts as a failure, so a pending account cannot be guessed faster than any other.
- **Per client address**, a budget of failed logins and signups per `window` seconds. A successful
  login costs nothing, so a class behind one NAT logging in at 9:00 is not refused.

An attempt is counted when it is let through (`reserve`), before its password is hashed, and a login that
works gives it back. Counted only once bcrypt had answered, 50 simultaneous guesses all passed the check: 50
password checks however small the budget, and a hashing pool full of them.

The clock is injectable, so the arithmetic is tested without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_TRACKED = 50_000  # entries before old ones are pruned: memory stays bounded under a spray of addresses


@dataclass
class Throttle:
    free_failures: int = 5
    base_delay: float = 1.0
    max_delay: float = 600.0
    address_budget: int = 30
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    _spent: dict[str, deque[float]] = field(default_factory=dict)

    def delay(self, failures: int) -> float:
        """How long to wait after `failures` failed logins (0 while they are within the free ones)."""
        if failures < self.free_failures:
            return 0.0
        return min(self.base_delay * 2 ** (failures - self.free_failures), self.max_delay)

    def wait(self, username: str | None, address: str) -> float:
        """Seconds until `address` may try (`username`) again; 0 when it may now."""
        now = self.clock()
        waits = [0.0]
        spent = self._recent(address, now)
        if len(spent) >= self.address_budget:
            waits.append(spent[0] + self.window - now)
        if username is not None and (username, address) in self._failures:
            count, last = self._failures[(username, address)]
            waits.append(last + self.delay(count) - now)
        return max(waits)

    def reserve(self, username: str | None, address: str) -> float:
        """Count an attempt before it is made: the seconds it must wait (nothing is counted then), or 0 when it may
        go ahead, counted as a failure until `succeeded` gives it back. Nothing awaits between the check and the
        count, so on the hub's event loop no two attempts can both take the budget's last place."""
        wait = self.wait(username, address)
        if wait <= 0:
            self.failed(username, address)
        return wait

    def failed(self, username: str | None, address: str) -> None:
        """A failed login (username given) or a signup attempt (None): both spend the address's budget."""
        now = self.clock()
        self._prune(now)
        self._recent(address, now).append(now)
        if username is not None:
            count, _ = self._failures.get((username, address), (0, now))
            self._failures[(username, address)] = (count + 1, now)

    def succeeded(self, username: str, address: str) -> None:
        """A login that worked: its reservation is given back (successful logins cost the address nothing) and the
        account's failures from this address are forgotten."""
        self._failures.pop((username, address), None)
        spent = self._spent.get(address)
        if spent:
            # The newest entry goes, not necessarily this attempt's own: every newer one was counted while this
            # password was being checked, so a place frees earlier by at most that check's time. The count is exact.
            spent.pop()

    def _recent(self, address: str, now: float) -> deque[float]:
        spent = self._spent.setdefault(address, deque())
        while spent and spent[0] <= now - self.window:
            spent.popleft()
        return spent

    def _prune(self, now: float) -> None:
        if len(self._failures) + len(self._spent) < MAX_TRACKED:
            return
        horizon = now - self.max_delay - self.window
        self._failures = {k: v for k, v in self._failures.items() if v[1] > horizon}
        self._spent = {k: v for k, v in self._spent.items() if v and v[-1] > now - self.window}


def describe_wait(seconds: float) -> str:
    seconds = max(1, round(seconds))
    return f"{seconds} second{'s' if seconds != 1 else ''}" if seconds < 120 else f"{round(seconds / 60)} minutes"


class LoginRefused(Exception):
    """Why a login attempt was refused before its password was checked (throttling); str() is for the user."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


PROXY_RESOLVE_TTL_S = 30.0


@dataclass
class ProxyHost:
    """The proxy's service name on the stack network, where it is a container of the hub's network namespace no
    more (Swarm): its addresses, looked up at most every PROXY_RESOLVE_TTL_S (a new task has a new one)."""

    name: str = ""
    resolve: Callable[[str], set[str]] = field(default=lambda name: _resolve(name))
    clock: Callable[[], float] = time.monotonic
    _cached: tuple[float, frozenset[str]] = (float("-inf"), frozenset())

    def addresses(self) -> frozenset[str]:
        if not self.name:
            return frozenset()
        at, found = self._cached
        if self.clock() - at > PROXY_RESOLVE_TTL_S:
            try:
                found = frozenset(self.resolve(self.name))
            except OSError:
                found = frozenset()
            self._cached = (self.clock(), found)
        return found


def _resolve(name: str) -> set[str]:
    import socket

    return {info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}


PROXY = ProxyHost()  # stack/jupyterhub_config.py names it on Swarm


def client_address(request, proxy: ProxyHost = PROXY) -> str:
    """The client's address as the hub's own proxy saw it.

    TLS ends in configurable-http-proxy, which appends the client's address to X-Forwarded-For. Only that last
    entry is trusted, and only on a connection from the proxy: this container's own address (Compose: the hub
    shares the proxy's network namespace), or the proxy service's (Swarm). Tornado's xheaders would also believe a
    client's own X-Real-Ip, and a lab could talk to the hub's port directly with any header it likes.
    """
    context = request.connection.context
    peer = context.address[0] if isinstance(getattr(context, "address", None), tuple) else ""
    try:
        local = request.connection.stream.socket.getsockname()[0]
    except (AttributeError, OSError):
        local = ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if peer and forwarded and (peer == local or peer in ("127.0.0.1", "::1") or peer in proxy.addresses()):
        return forwarded.split(",")[-1].strip()
    return peer or request.remote_ip
