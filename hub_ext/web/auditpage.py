"""The audit page and API (issue 29, part 3): admins read the trail, filtered by user, action and time, and export
it as CSV. Nothing here, or anywhere, edits or deletes a record (hub_ext.auth.audit)."""

from __future__ import annotations

import json
from datetime import datetime

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from tornado import web

from hub_ext.auth.audit import ACTIONS, Query, as_dict, find, to_csv
from hub_ext.web.selfservice import authorize

LIMIT_MAX = 5000


def audit_query(get) -> Query:
    """The filter from request arguments (`get(name)` -> str or None); 400 with one line naming a bad one."""
    action = get("action") or None
    if action is not None and action not in ACTIONS:
        raise web.HTTPError(400, f"action={action!r} is not an audited action; use one of {', '.join(ACTIONS)}")
    times = {}
    for name in ("since", "until"):
        raw = get(name)
        if raw:
            try:
                times[name] = datetime.fromisoformat(raw.replace("Z", "+00:00")).replace(tzinfo=None)
            except ValueError:
                raise web.HTTPError(400, f"{name}={raw!r} is not a time; use ISO 8601, e.g. 2026-12-01T09:00") from None
    raw_limit = get("limit") or "500"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LIMIT_MAX:
        raise web.HTTPError(400, f"limit={raw_limit!r} is not a number of records from 1 to {LIMIT_MAX}")
    return Query(user=get("user") or None, action=action, limit=int(raw_limit), **times)


class AuditAPIHandler(APIHandler):
    """GET /api/hubforge/audit[?user=&action=&since=&until=&limit=&format=csv] -- admins (admin:users)."""

    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:users")
        entries = find(self.db, audit_query(lambda name: self.get_argument(name, None)))
        if self.get_argument("format", "") == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="hubforge-audit.csv"')
            self.finish(to_csv(entries))
            return
        self.finish(json.dumps({"records": [as_dict(entry) for entry in entries]}))


class AuditPageHandler(BaseHandler):
    """GET /hubforge/audit -- the admins' page: the trail, filtered, newest first."""

    @web.authenticated
    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:users")
        get = lambda name: self.get_argument(name, None)  # noqa: E731
        query = audit_query(get)
        entries = [as_dict(entry) for entry in find(self.db, query)]
        self.finish(
            await self.render_template(
                "hubforge-audit.html",
                records=entries,
                actions=ACTIONS,
                chosen={name: get(name) or "" for name in ("user", "action", "since", "until")},
            )
        )


handlers = [
    (r"/api/hubforge/audit", AuditAPIHandler),
    (r"/hubforge/audit", AuditPageHandler),
]
