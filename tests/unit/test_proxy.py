"""The proxy in a container of its own: the hub waits for its API (hub_ext.hub.proxy)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from hub_ext.hub.proxy import wait_for_api


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_hub_waits_for_a_proxy_that_listens_late():
    """A refused connection would end JupyterHub's start at once; the proxy loads after the hub's certificate."""
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def listen_later() -> None:
        time.sleep(0.6)
        listener.bind(("127.0.0.1", port))
        listener.listen()

    threading.Thread(target=listen_later, daemon=True).start()
    said = []
    started = time.monotonic()
    try:
        wait_for_api(f"http://127.0.0.1:{port}", timeout=10, say=said.append, step=0.05)
    finally:
        listener.close()
    assert time.monotonic() - started >= 0.5  # it did wait, and returned once the port answered


def test_a_proxy_that_never_answers_is_one_line():
    port = free_port()
    with pytest.raises(
        TimeoutError, match=rf"the proxy's API at 127.0.0.1:{port} did not answer within 0 s .*invoke logs proxy"
    ):
        wait_for_api(f"http://127.0.0.1:{port}", timeout=0.3, say=lambda message: None, step=0.05)


def test_the_upgrades_canary_reaches_the_proxy_where_the_engine_put_it():
    """On Swarm the proxy is no longer in the hub's container: the canary's check through it went to a closed port."""
    from hub_ext.hub.admincli import proxy_host

    assert proxy_host({"HUBFORGE_PROXY_API": "http://proxy:8001"}) == "proxy"  # Swarm: the proxy's service
    assert proxy_host({"HUBFORGE_PROXY_API": "http://127.0.0.1:8001"}) == "127.0.0.1"  # Compose: the shared namespace
    assert proxy_host({}) == "127.0.0.1"  # a stack from before: the proxy in the hub's container
