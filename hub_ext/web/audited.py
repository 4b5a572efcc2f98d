"""JupyterHub's own REST handlers for users, groups and tokens, recorded in the audit trail (issue 29, part 3).

The admin page and scripts change who can do what through JupyterHub's API: deleting a user, renaming one or making
one admin, creating or deleting a group, adding or removing members, creating a token. Each handler here is
JupyterHub's, registered at the same route ahead of it (an authenticator's routes come first), and adds one record
once JupyterHub's own method has succeeded. Nothing else about the request changes, except that a token cannot be made
for an account that must still choose its own password (hub_ext.hub.passwordgate), and that a deleted built-in group
is made again, empty.
"""

from __future__ import annotations

from jupyterhub.apihandlers.groups import GroupAPIHandler, GroupListAPIHandler, GroupUsersAPIHandler
from jupyterhub.apihandlers.users import UserAPIHandler, UserListAPIHandler, UserTokenListAPIHandler
from jupyterhub.utils import maybe_future
from tornado import web

from hub_ext.auth.audit import record
from hub_ext.auth.people import DUE
from hub_ext.auth.throttle import client_address
from hub_ext.hub.passwordgate import REFUSAL
from hub_ext.naming import BUILTIN_GROUPS
from hub_ext.spawn.spawner import ensure_builtin_groups

TOKEN_FIELDS = ("note", "expires_in", "scopes", "roles")  # what a token record keeps: never the token


def body_of(handler) -> dict:
    """The request's JSON object (JupyterHub's handler has read and checked it already), or {}."""
    body = handler.get_json_body() if handler.request.body else None
    return body if isinstance(body, dict) else {}


def audit(handler, action: str, subject: str, detail: dict | None = None) -> None:
    """One record, made only when JupyterHub's method answered with success."""
    if handler.get_status() < 400:
        actor = handler.current_user.name if handler.current_user is not None else "-"
        record(handler.db, actor, action, subject, client_address(handler.request), detail)


class AuditedUserListAPIHandler(UserListAPIHandler):
    async def post(self):
        names = body_of(self).get("usernames", [])
        await maybe_future(super().post())
        for name in names if isinstance(names, list) else []:
            audit(self, "user-create", str(name), {"admin": bool(body_of(self).get("admin"))})


class AuditedUserAPIHandler(UserAPIHandler):
    async def post(self, user_name):
        await maybe_future(super().post(user_name))
        audit(self, "user-create", user_name, {"admin": bool(body_of(self).get("admin"))})

    async def delete(self, user_name):
        await maybe_future(super().delete(user_name))
        audit(self, "delete", user_name)

    async def patch(self, user_name):
        changes = {key: value for key, value in body_of(self).items() if key != "auth_state"}
        await maybe_future(super().patch(user_name))
        audit(self, "user-change", user_name, changes)


class AuditedUserTokenListAPIHandler(UserTokenListAPIHandler):
    async def post(self, user_name):
        if DUE.is_due(self.db, self.authenticator.normalize_username(user_name)):
            raise web.HTTPError(403, REFUSAL)
        body = body_of(self)
        await maybe_future(super().post(user_name))
        audit(self, "token-create", user_name, {key: body[key] for key in TOKEN_FIELDS if key in body})


class AuditedGroupListAPIHandler(GroupListAPIHandler):
    async def post(self):
        body = body_of(self)
        await maybe_future(super().post())
        for group in body.get("groups", []):
            audit(self, "group-change", str(group), {"created": True, "users": body.get("users", [])})


class AuditedGroupAPIHandler(GroupAPIHandler):
    async def post(self, group_name):
        await maybe_future(super().post(group_name))
        audit(self, "group-change", group_name, {"created": True, "users": body_of(self).get("users", [])})

    async def delete(self, group_name):
        await maybe_future(super().delete(group_name))
        audit(self, "group-change", group_name, {"deleted": True})
        if group_name in BUILTIN_GROUPS:  # made again, empty: its meaning stays for the members an admin adds
            ensure_builtin_groups(self.db)


class AuditedGroupUsersAPIHandler(GroupUsersAPIHandler):
    async def post(self, group_name):
        await maybe_future(super().post(group_name))
        audit(self, "group-change", group_name, {"added": body_of(self).get("users", [])})

    async def delete(self, group_name):
        await maybe_future(super().delete(group_name))
        audit(self, "group-change", group_name, {"removed": body_of(self).get("users", [])})


handlers = [
    (r"/api/users", AuditedUserListAPIHandler),
    (r"/api/users/([^/]+)", AuditedUserAPIHandler),
    (r"/api/users/([^/]+)/tokens", AuditedUserTokenListAPIHandler),
    (r"/api/groups", AuditedGroupListAPIHandler),
    (r"/api/groups/([^/]+)", AuditedGroupAPIHandler),
    (r"/api/groups/([^/]+)/users", AuditedGroupUsersAPIHandler),
]
