"""hub_ext's pages and APIs: restart my server, manage my volumes, broadcast to every lab.

One class per endpoint; authorization in `authorize`; every destructive action writes one audit line.
The routes live under /hub/hubforge/ and /hub/api/hubforge/, clear of JupyterHub's /hub/api/users/...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from hub_ext.auth.audit import record
from hub_ext.auth.throttle import client_address
from hub_ext.naming import user_names
from hub_ext.spawn.spawner import lab_answers, server_token, user_lock
from hub_ext.web.actions import (
    DELIVERY_TIMEOUT_S,
    MESSAGE_MAX,
    TYPES,
    BadRequest,
    broadcast_request,
    parse_json,
    volume_kinds,
    volume_listing,
)
from hub_ext.web.metrics import count_deliveries, count_restart, count_volume_resets

# A child of the hub's own logger, so audit lines land in the hub log with its format and level.
audit = logging.getLogger("JupyterHub").getChild("audit")
READY_TIMEOUT_S = 90
RESTART_POLL_S = 0.2


def authorize(handler: BaseHandler, target: str | None, *, admin_only: bool = False, scope: str = "admin:servers"):
    """The one authorization check. Returns the target user (or the current user for admin pages).

    Owner or admin for a user's server (scope servers!user=<name>); for admin pages, `scope`:
    admin:servers for servers and broadcast, admin:users for decisions about accounts.
    403 for anyone else, 404 for an unknown user the caller may otherwise act on.
    """
    current = handler.current_user
    if current is None:
        raise web.HTTPError(403, "log in first")
    if admin_only:
        if not handler.has_scope(scope):
            raise web.HTTPError(403, "only admins may do this")
        return current
    if not handler.has_scope(f"servers!user={target}"):
        raise web.HTTPError(403, f"{current.name} may not manage {target!r}'s server")
    user = handler.find_user(target)
    if user is None:
        raise web.HTTPError(404, f"no user {target!r}")
    return user


@contextlib.asynccontextmanager
async def exclusively(name: str):
    """The user's lock, or 409 at once when a start, restart or reset of theirs is already under way."""
    lock = user_lock(name)
    if lock.locked():
        raise web.HTTPError(
            409, f"{name}'s server is busy with another start, restart or volume reset; try again when it settles"
        )
    async with lock:
        yield


def spawner_of(user):
    """The user's default server's spawner (its Docker gateway reaches the daemon)."""
    return user.spawners[""]


def prefix_of(spawner) -> str:
    return getattr(spawner, "volume_prefix", "jupyterlab")


class RestartAPIHandler(APIHandler):
    """POST /api/hubforge/users/:name/restart -- `docker restart` of the same container, then ready again."""

    async def post(self, user_name: str):
        user = authorize(self, user_name)
        spawner = spawner_of(user)

        async def moved() -> None:  # a restart may hand out a new address: tell the proxy
            self.db.commit()
            await self.proxy.add_user(user)

        try:
            async with exclusively(user.name):
                result = await restart_server(spawner, user.name, moved)
        except web.HTTPError as exc:
            audit.info(
                "restart by=%s user=%s result=refused status=%s", self.current_user.name, user.name, exc.status_code
            )
            count_restart(None)
            raise
        count_restart(result)
        audit.info(
            "restart by=%s user=%s container=%s result=%s seconds=%s",
            self.current_user.name,
            user.name,
            result["container"][:12],
            result["status"],
            result.get("seconds"),
        )
        if result["status"] != "restarted":
            raise web.HTTPError(500, f"restart failed: {result['reason']}")
        self.write(json.dumps(result))


class VolumesAPIHandler(APIHandler):
    """GET /api/hubforge/users/:name/volumes -- the user's home, workspace and cache, with sizes."""

    async def get(self, user_name: str):
        user = authorize(self, user_name)
        spawner = spawner_of(user)
        names = user_names(prefix_of(spawner), user.name)
        self.write(
            json.dumps(
                {
                    "user": user.name,
                    "running": bool(spawner.active),
                    "volumes": volume_listing(
                        names.volumes, await volume_sizes(spawner, names.volumes), await quota_usage(spawner)
                    ),
                }
            )
        )


class VolumeResetAPIHandler(APIHandler):
    """POST /api/hubforge/users/:name/volumes/reset {"volumes": [...]} -- delete the chosen volumes."""

    async def post(self, user_name: str):
        user = authorize(self, user_name)
        try:
            kinds = volume_kinds(parse_json(self.request.body))
        except BadRequest as exc:
            raise web.HTTPError(400, str(exc)) from None
        spawner = spawner_of(user)
        async with exclusively(user.name):
            results = await reset_volumes(spawner, user_names(prefix_of(spawner), user.name), kinds)
        summary = " ".join(f"{kind}={r['result']}" for kind, r in results.items())
        record(
            self.db,
            self.current_user.name,
            "volume-reset",
            user.name,
            client_address(self.request),
            {"results": summary},
        )
        count_volume_resets(results)
        self.write(json.dumps({"user": user.name, "results": results}))


class NodeAPIHandler(APIHandler):
    """DELETE /api/hubforge/users/:name/node -- admins: forget the node that holds a user's volumes (Swarm, node-pinned
    storage), when that node is gone for good. The next start lands on any ready node, with new, empty volumes."""

    async def delete(self, user_name: str):
        authorize(self, None, admin_only=True)
        user = authorize(self, user_name)
        spawner = spawner_of(user)
        forget = getattr(spawner, "forget_node", None)
        if forget is None:
            raise web.HTTPError(409, "only the swarm engine (with node-pinned storage) ties users to a node")
        async with exclusively(user.name):
            if spawner.active or spawner.pending:
                raise web.HTTPError(409, f"{user.name}'s server is running: stop it before forgetting its node")
            node = forget()
            spawner.orm_spawner.state = spawner.get_state()
            self.db.commit()
        audit.info("forget-node by=%s user=%s node=%s", self.current_user.name, user.name, node or "-")
        self.write(json.dumps({"user": user.name, "forgot": node or None}))


class BroadcastAPIHandler(APIHandler):
    """POST /api/hubforge/broadcast -- deliver a notification to every chosen running lab, concurrently."""

    async def post(self):
        sender = authorize(self, None, admin_only=True)
        try:
            request = broadcast_request(parse_json(self.request.body), [u.name for u in self.db.query(orm.User)])
        except BadRequest as exc:
            raise web.HTTPError(400, str(exc)) from None
        targets = running_users(self) if request.recipients is None else [self.find_user(n) for n in request.recipients]
        payload = request.payload(sender.name)
        results = await asyncio.gather(*(self.deliver_to(user, payload) for user in targets))
        delivered = sum(1 for r in results if r["result"] == "delivered")
        count_deliveries(results)
        record(
            self.db,
            sender.name,
            "broadcast",
            "all" if request.recipients is None else ",".join(request.recipients),
            client_address(self.request),
            {"type": request.type, "delivered": delivered, "of": len(results), "message": request.message},
        )
        self.write(json.dumps({"delivered": delivered, "results": results}))

    async def deliver_to(self, user, payload: dict[str, Any]) -> dict[str, Any]:
        spawner = user.spawners.get("") if "" in user.orm_spawners else None
        if spawner is None or not (spawner.active and spawner.ready):
            return {"user": user.name, "result": "failed", "reason": "server not running"}
        # The lab's own server token, which the lab checks itself: no token is made or stored for a broadcast,
        # and no lab has to ask the hub about one (a hundred labs would, all at the same moment).
        token = await server_token(spawner)
        if not token:
            return {"user": user.name, "result": "failed", "reason": "the lab's server token is not known to the hub"}
        return await deliver(user.name, spawner.server.url, payload, token)


class VolumesPageHandler(BaseHandler):
    """GET /hubforge/volumes[?user=name] -- the volume manager page."""

    @web.authenticated
    async def get(self):
        user = authorize(self, self.get_argument("user", self.current_user.name))
        spawner = spawner_of(user)
        names = user_names(prefix_of(spawner), user.name)
        listing = volume_listing(names.volumes, await volume_sizes(spawner, names.volumes), await quota_usage(spawner))
        self.finish(
            await self.render_template(
                "hubforge-volumes.html", target=user, running=bool(spawner.active), volumes=listing
            )
        )


class BroadcastPageHandler(BaseHandler):
    """GET /hubforge/broadcast -- the admins' page for writing a notification."""

    @web.authenticated
    async def get(self):
        authorize(self, None, admin_only=True)
        running = sorted(u.name for u in running_users(self))
        self.finish(
            await self.render_template("hubforge-broadcast.html", running=running, types=TYPES, message_max=MESSAGE_MAX)
        )


# -- helpers that talk to Docker and the labs --------------------------------------------------------------
async def volume_sizes(spawner, volumes: dict[str, str]) -> dict[str, int | None]:
    """Existing volumes of the user -> size in bytes (None when not measured yet), on the node that holds them."""
    return await spawner.volume_sizes(list(volumes.values()))


async def quota_usage(spawner) -> dict[str, dict[str, Any]]:
    """The user's quotas and their use, where the engine has quotas (hub_ext.spawn.spawner.quota_usage)."""
    measure = getattr(spawner, "quota_usage", None)
    return await measure() if measure is not None else {}


def running_users(handler: BaseHandler) -> list:
    users = []
    for orm_user in handler.db.query(orm.User):
        user = handler.users[orm_user]
        spawner = user.spawners.get("") if "" in user.orm_spawners else None
        if spawner is not None and spawner.active and spawner.ready:
            users.append(user)
    return sorted(users, key=lambda u: u.name)


async def restart_server(spawner, username: str, on_address_change) -> dict[str, Any]:
    """Restart the lab's container in place and wait until it answers. 409 unless it is running."""
    if spawner.pending:
        raise web.HTTPError(409, f"{username}'s server is busy ({spawner.pending}); try again when it settles")
    if not (spawner.active and spawner.ready and getattr(spawner, "object_id", None)):
        raise web.HTTPError(409, f"{username}'s server is not running; start it instead of restarting")
    started = time.monotonic()
    container = spawner.object_id
    spawner.restarting = True  # JupyterHub's poll must not take the stopped moment for a death
    try:
        container = await spawner.restart_lab()  # the same container (compose), a new task of the same service (swarm)
        ip, port = await spawner.get_ip_and_port()
        if (ip, port) != (spawner.server.ip, spawner.server.port):
            spawner.server.ip, spawner.server.port = ip, port
            await on_address_change()
        if not await lab_answers(
            spawner.server.url, READY_TIMEOUT_S, RESTART_POLL_S, alive=spawner.lab_alive(container)
        ):
            raise TimeoutError(f"the lab did not answer within {READY_TIMEOUT_S} s after the restart")
    except Exception as exc:  # Docker refused, or the lab did not come back: report, do not hide
        return {"status": "failed", "container": container, "reason": str(exc)}
    finally:
        spawner.restarting = False
    return {"status": "restarted", "container": container, "seconds": round(time.monotonic() - started, 2)}


async def reset_volumes(spawner, names, kinds: list[str]) -> dict[str, dict[str, Any]]:
    """Delete exactly the chosen volumes of a stopped server; 409 while it runs."""
    if spawner.active or spawner.pending:
        raise web.HTTPError(409, "the server is running: stop it before resetting volumes")
    results = await spawner.remove_volumes([names.volumes[kind] for kind in kinds])
    return dict(zip(kinds, results))


async def deliver(username: str, server_url: str, payload: dict[str, Any], token: str) -> dict[str, Any]:
    """POST one notification to one lab's hubforge-notify endpoint; a result, never an exception."""
    request = HTTPRequest(
        url_path_join(server_url, "hubforge/notify"),
        method="POST",
        body=json.dumps(payload),
        request_timeout=DELIVERY_TIMEOUT_S,
        connect_timeout=2,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        response = await AsyncHTTPClient().fetch(request)
    except HTTPClientError as exc:
        if exc.code == 599:
            reason = f"the lab did not answer within {DELIVERY_TIMEOUT_S:.0f} s"
        elif exc.code == 404:
            reason = "the lab has no notification extension (an older lab image?)"
        else:
            reason = f"the lab answered {exc.code}"
        return {"user": username, "result": "failed", "reason": reason}
    except OSError as exc:
        return {"user": username, "result": "failed", "reason": f"cannot reach the lab: {exc}"}
    try:  # every user controls their own lab's answer: a bad one fails that recipient, never the broadcast
        answer = json.loads(response.body or b"{}")
        tabs = answer.get("delivered_to") if isinstance(answer, dict) else None
    except ValueError:
        return {"user": username, "result": "failed", "reason": "the lab answered something that is not JSON"}
    return {"user": username, "result": "delivered", "tabs": tabs}


# -- the URL table ---------------------------------------------------------------------------------------
default_handlers = [
    (r"/api/hubforge/users/([^/]+)/restart", RestartAPIHandler),
    (r"/api/hubforge/users/([^/]+)/volumes", VolumesAPIHandler),
    (r"/api/hubforge/users/([^/]+)/volumes/reset", VolumeResetAPIHandler),
    (r"/api/hubforge/users/([^/]+)/node", NodeAPIHandler),
    (r"/api/hubforge/broadcast", BroadcastAPIHandler),
    (r"/hubforge/volumes", VolumesPageHandler),
    (r"/hubforge/broadcast", BroadcastPageHandler),
]
