"""The Activity page and APIs (issue 29, part 2): every user at a glance for admins (running, node, image, CPU and
memory now and over the last hour, volumes and quotas, last activity, groups), the usage report (CPU-, memory- and
GPU-hours per user or group), and a user's own figures for their home page.

Everything here reads the collector's memory (hub_ext.hub.activity) and the hub's database, in one query for every
user with their groups and servers: a page view never reaches Docker.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from sqlalchemy.orm import selectinload
from tornado import web

from hub_ext.hub import usage
from hub_ext.hub.activity import Collector, group_policies, quotas, volume_figures
from hub_ext.naming import user_names
from hub_ext.web.selfservice import authorize

OTHER_NODE = "figures only for the hub's node"
NOT_YET = "started since the last collection: figures at the next one"
REPORT_DAYS_MAX = 366
CSV_COLUMNS = (
    "user",
    "running",
    "node",
    "image",
    "cpu_percent",
    "memory_bytes",
    "memory_limit",
    "gpus",
    "home_bytes",
    "home_quota",
    "workspace_bytes",
    "workspace_quota",
    "cache_bytes",
    "last_activity",
    "idle_seconds",
    "groups",
)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def every_user(db) -> list[orm.User]:
    """Every user with their groups and servers: one query (and one for each of the two relations, whatever the
    number of users)."""
    return (
        db.query(orm.User)
        .options(selectinload(orm.User.groups), selectinload(orm.User._orm_spawners).selectinload(orm.Spawner.server))
        .order_by(orm.User.name)
        .all()
    )


def default_server(user: orm.User) -> orm.Spawner | None:
    return next((spawner for spawner in user._orm_spawners if spawner.name == ""), None)


def user_row(user: orm.User, collector: Collector | None, policies: Mapping, prefix: str, now: datetime) -> dict:
    """One user's row of the Activity page."""
    server = default_server(user)
    running = server is not None and server.server is not None
    groups = sorted(group.name for group in user.groups)
    lab = collector.now_of(user.name) if collector is not None else None
    moments = (_utc(user.last_activity), _utc(server.last_activity if server else None))
    last = max((moment for moment in moments if moment), default=None)
    row: dict[str, Any] = {
        "name": user.name,
        "admin": bool(user.admin),
        "running": running,
        "node": "",
        "image": "",
        "note": "",
        "gpus": 0,
        "cpu_percent": None,
        "memory_bytes": None,
        "memory_limit": None,
        "series": [],
        "groups": groups,
        "last_activity": last.isoformat() if last else None,
        "idle_seconds": int((now - last).total_seconds()) if last else None,
        "volumes": volume_figures(collector, user_names(prefix, user.name).volumes, quotas(policies, groups))
        if collector is not None
        else {},
    }
    if lab is not None:
        row.update({key: lab[key] for key in ("node", "image", "gpus", "cpu_percent", "memory_bytes", "memory_limit")})
        row["series"] = lab["series"]
        if not lab["measured"]:
            row["note"] = "no cgroup figures (is /sys/fs/cgroup mounted in the hub?)"
    elif running:  # running by the hub's records, not in the last listing: started since, or on another node (Swarm)
        node = ((server.state or {}).get("node_id") or "")[:12]
        row["node"] = node
        row["note"] = f"{NOT_YET}, or {OTHER_NODE}" if node else NOT_YET
    return row


def activity_rows(db, collector: Collector | None) -> list[dict[str, Any]]:
    users = every_user(db)
    policies = group_policies({group for user in users for group in user.groups})
    prefix = collector.volume_prefix if collector is not None else "jupyterlab"
    now = datetime.now(timezone.utc)
    return [user_row(user, collector, policies, prefix, now) for user in users]


def matches(row: Mapping[str, Any], text: str, running_only: bool) -> bool:
    """The page's filter, also offered by the API: a piece of the user's name, a group or the image; running only."""
    if running_only and not row["running"]:
        return False
    text = text.strip().lower()
    return not text or any(text in value.lower() for value in (row["name"], row["image"], *row["groups"]))


def rows_csv(rows: list[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:

        def volume(kind: str, key: str, volumes=row["volumes"]) -> Any:
            value = (volumes.get(kind) or {}).get(key)
            return "" if value is None else value

        writer.writerow(
            [
                row["name"],
                "1" if row["running"] else "0",
                row["node"],
                row["image"],
                "" if row["cpu_percent"] is None else row["cpu_percent"],
                "" if row["memory_bytes"] is None else row["memory_bytes"],
                "" if row["memory_limit"] is None else row["memory_limit"],
                row["gpus"],
                volume("home", "size_bytes"),
                volume("home", "quota_bytes"),
                volume("workspace", "size_bytes"),
                volume("workspace", "quota_bytes"),
                volume("cache", "size_bytes"),
                row["last_activity"] or "",
                "" if row["idle_seconds"] is None else row["idle_seconds"],
                " ".join(row["groups"]),
            ]
        )
    return out.getvalue()


def _time(name: str, raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPError(400, f"{name}={raw!r} is not a time; use ISO 8601, e.g. 2026-12-01T09:00") from None
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def usage_period(get: Callable[[str], str | None], now: datetime) -> usage.Period:
    """The report's period and grouping from request arguments (`get(name)` -> str or None); 400 with one line
    naming a bad one. Default: the last 7 days, by user."""
    by = get("by") or "user"
    if by not in usage.BY:
        raise web.HTTPError(400, f"by={by!r} is not a grouping; use by=user or by=group")
    until = _time("until", get("until")) if get("until") else now
    since = _time("since", get("since")) if get("since") else until - timedelta(days=7)
    if since >= until:
        raise web.HTTPError(400, f"since={since.isoformat()} is not before until={until.isoformat()}")
    if until - since > timedelta(days=REPORT_DAYS_MAX):
        raise web.HTTPError(400, f"the period is longer than {REPORT_DAYS_MAX} days; give a later since")
    return usage.Period(since, until, by)


def collector_of(handler) -> Collector | None:
    """The hub's collector (None: the authenticator has none, e.g. in a unit test's hub)."""
    return getattr(handler.authenticator, "activity", None)


def collector_status(collector: Collector | None) -> dict[str, Any]:
    if collector is None:
        return {"started": False, "runs": 0}
    return {"started": collector.runs > 0, **collector.status()}


def pending_of(collector: Collector | None) -> dict:
    return dict(collector.ledger.open) if collector is not None else {}


class ActivityAPIHandler(APIHandler):
    """GET /api/hubforge/activity[?q=&running=1&format=csv] -- admins (admin:users): every user at a glance."""

    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:users")
        collector = collector_of(self)
        text, running_only = self.get_argument("q", ""), self.get_argument("running", "") in ("1", "true")
        rows = [row for row in activity_rows(self.db, collector) if matches(row, text, running_only)]
        if self.get_argument("format", "") == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="hubforge-activity.csv"')
            self.finish(rows_csv(rows))
            return
        self.finish(json.dumps({"collector": collector_status(collector), "users": rows}))


class MyActivityAPIHandler(APIHandler):
    """GET /api/hubforge/activity/me -- any user: their own lab now and their last 7 days' usage."""

    async def get(self):
        current = self.current_user
        if current is None:
            raise web.HTTPError(403, "log in first")
        collector = collector_of(self)
        row = my_row(self.db, collector, current.name)
        now = usage.utc_now()
        week = usage.per_user(
            self.db, usage.Period(now - timedelta(days=7), now), pending_of(collector), only=current.name
        ).get(current.name, usage.Totals())
        mine = {"collector": collector_status(collector), "user": row, "week": usage.report_row(current.name, week)}
        self.finish(json.dumps(mine))


def my_row(db, collector: Collector | None, name: str) -> dict[str, Any]:
    """One user's row (their own figures): the same as the admins' page shows."""
    user = (
        db.query(orm.User)
        .options(selectinload(orm.User.groups), selectinload(orm.User._orm_spawners).selectinload(orm.Spawner.server))
        .filter(orm.User.name == name)
        .one()
    )
    policies = group_policies(user.groups)
    prefix = collector.volume_prefix if collector is not None else "jupyterlab"
    return user_row(user, collector, policies, prefix, datetime.now(timezone.utc))


class UsageAPIHandler(APIHandler):
    """GET /api/hubforge/usage[?since=&until=&by=user|group&format=csv] -- admins (admin:users): CPU-, memory-, GPU-
    and running hours from the hourly figures (and the hour under way)."""

    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:users")
        fmt = self.get_argument("format", "json")
        if fmt not in ("json", "csv"):
            raise web.HTTPError(400, f"format={fmt!r} is not a format; use format=json or format=csv")
        period = usage_period(lambda name: self.get_argument(name, None), usage.utc_now())
        groups_of = {}
        if period.by == "group":
            groups_of = {user.name: [group.name for group in user.groups] for user in every_user(self.db)}
        rows = usage.report(self.db, period, pending_of(collector_of(self)), groups_of)
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="hubforge-usage-by-{period.by}.csv"')
            self.finish(usage.report_csv(rows, period.by))
            return
        self.finish(
            json.dumps(
                {"since": period.since.isoformat(), "until": period.until.isoformat(), "by": period.by, "rows": rows}
            )
        )


class ActivityPageHandler(BaseHandler):
    """GET /hubforge/activity -- the admins' page; its table fills and refreshes itself from the API."""

    @web.authenticated
    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:users")
        collector = collector_of(self)
        self.finish(
            await self.render_template(
                "hubforge-activity.html", interval=collector.interval if collector is not None else 15
            )
        )


handlers = [
    (r"/api/hubforge/activity", ActivityAPIHandler),
    (r"/api/hubforge/activity/me", MyActivityAPIHandler),
    (r"/api/hubforge/usage", UsageAPIHandler),
    (r"/hubforge/activity", ActivityPageHandler),
]
