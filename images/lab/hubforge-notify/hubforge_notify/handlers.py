"""The notify endpoint, the Server-Sent Events stream, and the in-process broker between them."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import reprlib
import uuid
from datetime import datetime, timezone
from typing import Any

import tornado.web
from jupyter_server.auth import User
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.iostream import StreamClosedError

TYPES = ("default", "info", "success", "warning", "error", "in-progress")
MAX_MESSAGE = 140
MAX_SENDER = 64
MAX_AUTO_CLOSE_MS = 600_000
DEFAULT_AUTO_CLOSE_MS = 5000
HEARTBEAT_S = 15.0
QUEUE_SIZE = 100  # per subscriber; a lagging tab loses its oldest notices, never blocks the others
BROKER_KEY = "hubforge_notify_broker"

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


class Broker:
    """Fan-out to every subscriber (one per open tab); publish never waits on a slow reader."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(queue)

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, notice: dict[str, Any]) -> int:
        """Queue `notice` for every subscriber; returns how many there were."""
        for queue in list(self._subscribers):
            offer(queue, notice)
        return len(self._subscribers)


def offer(queue: asyncio.Queue[Any], item: Any) -> None:
    """Put without waiting: when the queue is full, drop its oldest item first."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def parse_notification(body: bytes) -> dict[str, Any]:
    """The validated notice from a request body; ValueError with a one-line reason naming the field."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError(f"body must be a JSON object, got {_short.repr(body)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"body must be a JSON object, got {_short.repr(data)}")
    unknown = sorted(set(data) - {"message", "type", "autoClose", "sender"})
    if unknown:
        raise ValueError(f"unknown field, got {_short.repr(unknown[0])}")
    message = data.get("message")
    if not isinstance(message, str) or not 1 <= len(message.strip()) <= MAX_MESSAGE:
        raise ValueError(f"message must be a string of 1..{MAX_MESSAGE} characters, got {_short.repr(message)}")
    kind = data.get("type", "default")
    if kind not in TYPES:
        raise ValueError(f"type must be one of {', '.join(TYPES)}, got {_short.repr(kind)}")
    auto_close = data.get("autoClose", DEFAULT_AUTO_CLOSE_MS)
    # bool is an int in Python: `true` must not pass as 1 ms
    valid_ms = isinstance(auto_close, int) and not isinstance(auto_close, bool) and 1 <= auto_close <= MAX_AUTO_CLOSE_MS
    if auto_close is not False and not valid_ms:
        raise ValueError(
            f"autoClose must be false or milliseconds 1..{MAX_AUTO_CLOSE_MS}, got {_short.repr(auto_close)}"
        )
    sender = data.get("sender")
    if sender is not None and (not isinstance(sender, str) or not 1 <= len(sender.strip()) <= MAX_SENDER):
        raise ValueError(f"sender must be a string of 1..{MAX_SENDER} characters, got {_short.repr(sender)}")
    return {
        "message": message.strip(),
        "type": kind,
        "autoClose": auto_close,
        "sender": sender.strip() if sender is not None else None,
    }


SERVER_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # the token JupyterHub gave this server when it spawned it


def presents_server_token(authorization: str, environ=os.environ) -> bool:
    """Whether an Authorization header carries this server's own API token.

    Only the hub, which made it, and this server's own user (the `hubforge-notify` CLI sends it) hold that token.
    Checked here, it needs no round trip to the hub: a broadcast to a hundred labs would otherwise have each of
    them ask the hub about a new token at the same moment.
    """
    expected = environ.get(SERVER_TOKEN_ENV, "")
    scheme, _, offered = authorization.partition(" ")
    return (
        bool(expected)
        and scheme.lower() in ("token", "bearer")
        and hmac.compare_digest(offered.strip().encode(), expected.encode())
    )


class NotifyHandler(APIHandler):
    """POST {base_url}hubforge/notify: any caller the server authenticates may notify every open tab."""

    async def prepare(self) -> None:
        if presents_server_token(self.request.headers.get("Authorization", "")):
            if not self.check_host():
                raise tornado.web.HTTPError(403)
            user = User(username=os.environ.get("JUPYTERHUB_USER", "server"))
            self.current_user = self._jupyter_current_user = user
            return
        await super().prepare()  # anyone else: the server's own authentication (JupyterHub's, in a lab)

    @tornado.web.authenticated
    def post(self) -> None:
        try:
            notice = parse_notification(self.request.body)
        except ValueError as exc:
            # written directly: tornado's HTTPError would treat user text as a %-format string
            self.set_status(400)
            self.finish(json.dumps({"message": str(exc)}))
            return
        notice = {"id": uuid.uuid4().hex, "timestamp": datetime.now(timezone.utc).isoformat(), **notice}
        delivered = self.settings[BROKER_KEY].publish(notice)
        self.finish(json.dumps({"id": notice["id"], "delivered_to": delivered}))


class EventsHandler(APIHandler):
    """GET {base_url}hubforge/notifications/events: one SSE subscriber per open tab, until it disconnects."""

    _track_activity = False  # an open tab is not user activity: the idle culler must still see it idle

    def initialize(self) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] | None = None

    @tornado.web.authenticated
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache, no-store")
        self.set_header("X-Accel-Buffering", "no")  # no proxy buffering in front of the stream
        broker: Broker = self.settings[BROKER_KEY]
        self._queue = queue = broker.subscribe()
        try:
            self.write(": connected\n\n")
            await self.flush()
            while True:
                try:
                    notice = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    self.write(": heartbeat\n\n")
                else:
                    if notice is None:  # put by on_connection_close
                        break
                    self.write(f"event: notification\ndata: {json.dumps(notice)}\n\n")
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            broker.unsubscribe(queue)

    def on_connection_close(self) -> None:
        if self._queue is not None:
            offer(self._queue, None)


QUOTAS_ENV = "HUBFORGE_QUOTAS"  # set by the hub at spawn: {"home": {"mount": ..., "quota": bytes}, ...}


def quota_usage(environ=os.environ, statvfs=os.statvfs) -> dict[str, Any]:
    """What each of this lab's quota'd volumes holds and may hold, from its own filesystem (each quota'd volume is
    a filesystem of its quota's size); {} where the user's policy sets no quota."""
    try:
        quotas = json.loads(environ.get(QUOTAS_ENV) or "{}")
    except ValueError:
        return {}
    usage = {}
    for kind, spec in sorted(quotas.items()):
        if not isinstance(spec, dict) or not isinstance(spec.get("mount"), str):
            continue
        try:
            fs = statvfs(spec["mount"])
        except OSError:
            continue
        usage[kind] = {
            "mount": spec["mount"],
            "quota": spec.get("quota"),
            "size": fs.f_blocks * fs.f_frsize,
            "used": (fs.f_blocks - fs.f_bfree) * fs.f_frsize,
        }
    return usage


class UsageHandler(APIHandler):
    """GET {base_url}hubforge/usage: the quota'd volumes' use and quota, for the status bar."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.finish(json.dumps(quota_usage()))


def setup_handlers(web_app: tornado.web.Application) -> None:
    """Create the broker and route both endpoints under the server's base_url."""
    web_app.settings.setdefault(BROKER_KEY, Broker())
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base_url, "hubforge/notify"), NotifyHandler),
            (url_path_join(base_url, "hubforge/notifications/events"), EventsHandler),
            (url_path_join(base_url, "hubforge/usage"), UsageHandler),
        ],
    )
