"""Names under .localhost resolve to loopback in the tests, as they do in every browser (RFC 6761).

The stack gives each lab its own origin, https://<user>.hub.localhost:<port>/. Chromium and Firefox send
such names to 127.0.0.1 themselves; Python's resolver asks the system, which on many hosts knows only
`localhost`. Imported once by tests/conftest.py, so requests, tornado and Playwright's own Python side
all see the same mapping; nothing else is changed.
"""

from __future__ import annotations

import socket

_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and host.rstrip(".").lower().endswith(".localhost"):
        host = "127.0.0.1"
    return _system_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.getaddrinfo = _getaddrinfo
