"""The proxy in a container of its own (images/proxy): the hub waits for its API before JupyterHub asks it anything.

JupyterHub retries the proxy's API on its 5xx answers, but a refused connection ends the hub's start at once. The
proxy starts first, yet waits for the certificate that the hub makes at its first start, and takes a moment to load.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit


def wait_for_api(url: str, timeout: float, say: Callable[[str], None], step: float = 0.2) -> None:
    """Until something accepts a connection at `url`'s host and port; raises TimeoutError with one line after
    `timeout` seconds."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    started = time.monotonic()
    said = False
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as exc:
            waited = time.monotonic() - started
            if waited > timeout:
                raise TimeoutError(
                    f"the proxy's API at {host}:{port} did not answer within {timeout:.0f} s ({exc}); "
                    "see `invoke logs proxy`"
                ) from None
            if not said and waited > 2:
                say(f"waiting for the proxy's API at {host}:{port}")
                said = True
        time.sleep(step)
