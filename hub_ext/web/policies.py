"""Group policies in the hub (issue 28): the admins' page /hub/hubforge/policies, its API, and JupyterHub's own group
properties API made to refuse a bad policy.

A policy lives in its group's JupyterHub `properties` (hub_ext.labs.policy), so JupyterHub's REST API reads it
(GET /hub/api/groups/NAME) and writes it (PUT /hub/api/groups/NAME/properties); hubforge's API adds what JupyterHub's
has not: every group with its policy, members and running labs in one answer, a write that creates the group, and the
"restart to apply" notice to the labs a change affects. A change applies at each member's next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from jupyterhub import orm
from jupyterhub.apihandlers.groups import GroupPropertiesAPIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web

from hub_ext.auth.audit import record
from hub_ext.auth.throttle import client_address
from hub_ext.helpers.quota import SLACK, human
from hub_ext.labs.policy import PROPERTY, Policy, PolicyError, merge, parse_policy, size_bytes
from hub_ext.naming import user_names
from hub_ext.spawn.spawner import QUOTA_KINDS
from hub_ext.web.actions import BadRequest, parse_json
from hub_ext.web.selfservice import BroadcastAPIHandler, authorize, prefix_of, running_users, spawner_of

audit = logging.getLogger("JupyterHub").getChild("audit")
LAB_IMAGES_SETTING = "hubforge_lab_images"  # tornado setting: the stack's lab image names (jupyterhub_config.py)
RESTART_NOTICE = "The policy of your group {group} changed: restart your server to apply it."  # <= MESSAGE_MAX


def checked_properties(group: str, properties: Any, images: Iterable[str]) -> dict[str, Any]:
    """A group's new properties with the policy in them checked, field by field, and its images known to the stack.
    Raises BadRequest with one line naming the group and the field."""
    if not isinstance(properties, Mapping):
        raise BadRequest("the body must be a JSON object: the group's properties")
    try:
        policy = parse_policy(group, properties)
    except PolicyError as exc:
        raise BadRequest(str(exc)) from None
    known = list(images)
    if known:
        for name in [*policy.images, *([policy.default_image] if policy.default_image else [])]:
            if name not in known:
                raise BadRequest(
                    f"policy of group {group!r}: image {name!r} is not a lab image of this stack; "
                    f"use {', '.join(known)}"
                )
    return dict(properties)


def policy_fields(properties: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The policy as stored (the admin's own units), or None when the group has none of its own."""
    raw = (properties or {}).get(PROPERTY)
    return dict(raw) if isinstance(raw, Mapping) else None


def group_listing(db, running: set[str]) -> list[dict[str, Any]]:
    """Every group: its policy as stored, what it means (the built-in groups' meaning when none), members, and which
    members' running labs a change would affect."""
    listing = []
    for group in db.query(orm.Group).order_by(orm.Group.name):
        members = sorted(user.name for user in group.users)
        try:
            meaning = {
                k: v
                for k, v in vars(parse_policy(group.name, group.properties)).items()
                if v not in (None, (), {}, False)
            }
            problem = None
        except PolicyError as exc:
            meaning, problem = {}, str(exc)
        listing.append(
            {
                "name": group.name,
                "policy": policy_fields(group.properties),
                "effective": {k: list(v) if isinstance(v, tuple) else v for k, v in meaning.items()},
                "problem": problem,
                "members": members,
                "running": [name for name in members if name in running],
            }
        )
    return listing


QUOTA_CHECKS_AT_ONCE = 4  # members' volumes measured at once when a quota is lowered (a helper each when stopped)


def stored_policy(group) -> Policy:
    try:
        return parse_policy(group.name, group.properties)
    except PolicyError:  # a bad stored policy (written around the API) gives nothing
        return Policy()


async def quota_refusal(handler, group_name: str, properties: Mapping[str, Any]) -> str | None:
    """One line when the new policy leaves a member with a quota below what their quota'd volume already holds
    (lowering a quota never loses a file); None when it fits. A member's quota after the change is the most generous
    of their groups' (a larger one from another group holds). Only the quotas this change lowers are checked, by
    asking each member's volume's own filesystem, a few members at a time."""
    group = orm.Group.find(handler.db, group_name)
    if group is None:
        return None
    new, old = parse_policy(group_name, properties), stored_policy(group)
    lowered = [
        kind
        for kind, field in QUOTA_KINDS.items()
        if getattr(new, field)
        and (not getattr(old, field) or size_bytes(getattr(new, field)) < size_bytes(getattr(old, field)))
    ]
    if not lowered:
        return None
    checks = []
    for orm_user in group.users:
        spawner = spawner_of(handler.users[orm_user])
        others = {g.name: stored_policy(g) for g in orm_user.groups if g.name != group_name}
        after = merge(spawner.default_policy(), {**others, group_name: new}).policy
        for kind in lowered:
            if getattr(after, QUOTA_KINDS[kind]):
                checks.append((orm_user.name, spawner, kind, getattr(after, QUOTA_KINDS[kind])))
    gate = asyncio.Semaphore(QUOTA_CHECKS_AT_ONCE)

    async def over(name: str, spawner, kind: str, limit: str) -> str | None:
        volume = user_names(prefix_of(spawner), name).volumes[kind]
        async with gate:
            try:
                device = ((await spawner.docker("inspect_volume", volume)).get("Options") or {}).get("device")
            except Exception:  # noqa: BLE001 -- no such volume: nothing to hold
                return None
            if not device:
                return None
            answer = await spawner.volume_use(kind, device)
        if answer.get("result") == "measured" and answer["used"] + SLACK > size_bytes(limit):
            return (
                f"policy of group {group_name!r}: {QUOTA_KINDS[kind]}={limit!r} would be {name}'s, below what their "
                f"{kind} holds ({human(answer['used'])} in use): they delete files first, or the quota stays higher"
            )
        return None

    answers = await asyncio.gather(*(over(*check) for check in checks))
    return next((answer for answer in answers if answer), None)


class CheckedGroupPropertiesAPIHandler(GroupPropertiesAPIHandler):
    """JupyterHub's PUT /hub/api/groups/NAME/properties, refusing a bad policy (400, one line naming the field)."""

    async def put(self, group_name):
        data = self.get_json_body()
        try:
            checked_properties(group_name, data, self.settings.get(LAB_IMAGES_SETTING) or [])
        except BadRequest as exc:
            raise web.HTTPError(400, str(exc)) from None
        refusal = await quota_refusal(self, group_name, data)
        if refusal:
            raise web.HTTPError(400, refusal)
        return super().put(group_name)


class PoliciesAPIHandler(BroadcastAPIHandler):
    """GET /api/hubforge/policies -- every group with its policy, members and running labs (admins).
    PUT /api/hubforge/policies/NAME -- set one group's policy (the body: its fields, or null to remove it), creating
    the group when it does not exist; the members' running labs are told to restart to apply it."""

    async def get(self, group_name: str | None = None):
        authorize(self, None, admin_only=True, scope="admin:groups")
        running = {user.name for user in running_users(self)}
        groups = group_listing(self.db, running)
        if group_name is not None:
            groups = [g for g in groups if g["name"] == group_name]
            if not groups:
                raise web.HTTPError(404, f"no group {group_name!r}")
            self.write(json.dumps(groups[0]))
            return
        self.write(json.dumps({"groups": groups, "images": self.settings.get(LAB_IMAGES_SETTING) or []}))

    async def put(self, group_name: str | None = None):
        admin = authorize(self, None, admin_only=True, scope="admin:groups")
        if not group_name:
            raise web.HTTPError(405, "PUT names a group: /hub/api/hubforge/policies/NAME")
        try:
            policy = parse_json(self.request.body) if self.request.body.strip() != b"null" else None
            group = orm.Group.find(self.db, group_name)
            properties = dict(group.properties or {}) if group is not None else {}
            if policy is None:
                properties.pop(PROPERTY, None)
            else:
                properties[PROPERTY] = policy
            checked = checked_properties(group_name, properties, self.settings.get(LAB_IMAGES_SETTING) or [])
            refusal = await quota_refusal(self, group_name, checked)
        except BadRequest as exc:
            raise web.HTTPError(400, str(exc)) from None
        if refusal:
            raise web.HTTPError(400, refusal)
        created = group is None
        if created:
            group = orm.Group(name=group_name)
            self.db.add(group)
        group.properties = checked
        self.db.commit()
        running = [user for user in running_users(self) if group_name in {g.name for g in user.groups}]
        notice = {"message": RESTART_NOTICE.format(group=group_name), "type": "warning", "autoClose": False}
        payload = {**notice, "sender": admin.name}
        results = await asyncio.gather(*(self.deliver_to(user, payload) for user in running))
        record(
            self.db,
            admin.name,
            "policy-change",
            group_name,
            client_address(self.request),
            {"policy": policy, "created": created, "restart_to_apply": [user.name for user in running]},
        )
        self.set_status(201 if created else 200)
        self.write(
            json.dumps(
                {
                    "group": group_name,
                    "policy": policy_fields(group.properties),
                    "restart_to_apply": [user.name for user in running],
                    "notified": [r["user"] for r in results if r["result"] == "delivered"],
                }
            )
        )


class PoliciesPageHandler(BaseHandler):
    """GET /hubforge/policies -- the admins' page: groups, their policies and members; edit one."""

    @web.authenticated
    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:groups")
        running = {user.name for user in running_users(self)}
        self.finish(
            await self.render_template(
                "hubforge-policies.html",
                groups=group_listing(self.db, running),
                images=self.settings.get(LAB_IMAGES_SETTING) or [],
            )
        )


class PoliciesRedirectHandler(BaseHandler):
    """GET /hub/policies -- the page's short address."""

    def get(self):
        self.redirect(url_path_join(self.hub.base_url, "hubforge/policies"))


handlers = [
    (r"/policies", PoliciesRedirectHandler),
    (r"/api/groups/([^/]+)/properties", CheckedGroupPropertiesAPIHandler),
    (r"/api/hubforge/policies", PoliciesAPIHandler),
    (r"/api/hubforge/policies/([^/]+)", PoliciesAPIHandler),
    (r"/hubforge/policies", PoliciesPageHandler),
]
