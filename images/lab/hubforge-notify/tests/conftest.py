"""Fixtures: a jupyter_server with hubforge_notify enabled (pytest-jupyter), and an SSE client for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACKAGE_ROOT))  # the tests import the sources, not an installed wheel

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config() -> Config:
    return Config({"ServerApp": {"jpserver_extensions": {"hubforge_notify": True}}})


@pytest.fixture
def jp_base_url() -> str:
    return "/user/alice/"  # the prefix a JupyterHub-spawned lab has


@pytest.fixture
def server_url(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> str:
    """The test server's root URL; `http_server` is what makes it answer on jp_http_port."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
def token(jp_serverapp: Any) -> str:
    return jp_serverapp.identity_provider.token


class Events:
    """The `notification` events one open stream has received, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def next(self, timeout: float = 3.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.queue.get(), timeout)


async def _read(lines: AsyncIterator[str], events: Events) -> None:
    kind, data = None, None
    async for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "":
            if kind == "notification" and data is not None:
                events.queue.put_nowait(json.loads(data))
            kind, data = None, None


@pytest.fixture
def sse(server_url: str, token: str):
    """`async with sse() as events:` opens one events stream (one "tab"); it is subscribed on entry."""

    @contextlib.asynccontextmanager
    async def open_stream(headers: dict[str, str] | None = None) -> AsyncIterator[Events]:
        headers = {"Authorization": f"token {token}"} if headers is None else headers
        async with httpx.AsyncClient(timeout=None) as client:
            async with client.stream("GET", server_url + "hubforge/notifications/events", headers=headers) as response:
                assert response.status_code == 200, response.status_code
                assert response.headers["content-type"].startswith("text/event-stream")
                assert "no-cache" in response.headers["cache-control"]
                lines = response.aiter_lines()
                assert await asyncio.wait_for(anext(lines), 3) == ": connected"  # subscribed from here on
                events = Events()
                reader = asyncio.ensure_future(_read(lines, events))
                try:
                    yield events
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader

    return open_stream
