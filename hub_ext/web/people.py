"""The People page and API (issue 29, part 1): admins create a batch of approved accounts with generated passphrases,
and reset a password to a new passphrase. Either way the passphrase is shown once, to the admin, and the account must
choose its own password at its first login before anything else opens (hub_ext.hub.passwordgate).

On OpenID Connect stacks people come from the provider: the page says so and the API refuses in one line.
"""

from __future__ import annotations

import asyncio
import json
import re

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import maybe_future
from tornado import web

from hub_ext.auth.audit import record
from hub_ext.auth.passwords import hash_password
from hub_ext.auth.people import BATCH_MAX, DUE, Batch, Entry, generate_passphrase, parse_batch
from hub_ext.auth.rules import username_problem
from hub_ext.auth.throttle import client_address
from hub_ext.web.accounts import _SIGNING_UP, normalized_target, reset_password
from hub_ext.web.selfservice import authorize

GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
OIDC_REFUSAL = (
    "this hub signs people in with OpenID Connect: add people, and reset their passwords, at the identity provider"
)


def manages_passwords(handler) -> bool:
    """NativeAuthenticator keeps the passwords; with OIDC the provider does."""
    return hasattr(handler.authenticator, "store_account")


def account_listing(handler) -> list[dict]:
    """Every account with what an admin decides on: approved, admin, must change password, groups, running."""
    from nativeauthenticator.orm import UserInfo

    auth = handler.authenticator
    users = {user.name: user for user in handler.db.query(orm.User)}
    listing = []
    for account in handler.db.query(UserInfo).order_by(UserInfo.username):
        user = users.get(account.username)
        listing.append(
            {
                "name": account.username,
                "approved": bool(account.is_authorized),
                "admin": account.username in auth.admin_users or bool(user and user.admin),
                "password_due": DUE.is_due(handler.db, account.username),
                "groups": sorted(group.name for group in user.groups) if user else [],
                "created": user.created.isoformat() + "Z" if user and user.created else None,
            }
        )
    return listing


class PeopleAPIHandler(APIHandler):
    """GET /api/hubforge/people -- the accounts; POST -- a batch of new ones (admins, admin:users)."""

    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:users")
        if not manages_passwords(self):
            raise web.HTTPError(409, OIDC_REFUSAL)
        self.finish(json.dumps({"people": account_listing(self)}))

    async def post(self):
        admin = authorize(self, None, admin_only=True, scope="admin:users")
        if not manages_passwords(self):
            raise web.HTTPError(409, OIDC_REFUSAL)
        body = self.get_json_body()
        if not isinstance(body, dict) or not isinstance(body.get("text", body.get("users")), (str, list)):
            raise web.HTTPError(
                400,
                'send {"text": "<a name a line, groups after it, or a CSV with a name column>"} '
                'or {"users": [{"name": ..., "groups": [...]}]}',
            )
        create_groups = body.get("create_groups", False)
        if not isinstance(create_groups, bool):
            raise web.HTTPError(400, f"create_groups={create_groups!r} must be true or false")
        batch = parse_batch(body["text"]) if "text" in body else batch_of(body["users"])
        created, refused = await create_people(self, admin, batch, create_groups)
        if not created:
            self.set_status(400)
            what = f"{len(refused)} line{'s' if len(refused) != 1 else ''} refused" if refused else "no names given"
            self.finish(json.dumps({"message": f"nobody was created: {what}", "created": [], "refused": refused}))
            return
        self.set_status(201)
        self.finish(json.dumps({"created": created, "refused": refused}))


def batch_of(users: list) -> Batch:
    """The JSON form of a batch: [{"name": "ada", "groups": ["research"]}, ...]."""
    batch = Batch()
    for number, item in enumerate(users, start=1):
        if isinstance(item, str):
            item = {"name": item}
        name = item.get("name") if isinstance(item, dict) else None
        groups = item.get("groups", []) if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            batch.refuse(number, json.dumps(item, default=str)[:200], 'not {"name": "...", "groups": ["..."]}')
            continue
        batch.entries.append(Entry(number, name.strip(), tuple(dict.fromkeys(groups))))
    if len(batch.entries) > BATCH_MAX:
        for entry in batch.entries[BATCH_MAX:]:
            batch.refuse(entry.line, entry.name, f"a batch holds at most {BATCH_MAX} people; send the rest in another")
        del batch.entries[BATCH_MAX:]
    return batch


def entry_problem(handler, name: str, groups: tuple[str, ...], create_groups: bool, seen: dict[str, int]) -> str | None:
    """Why this line's person cannot be made: the signup rules, a name taken or given twice, a group."""
    auth = handler.authenticator
    problem = username_problem(name)
    if problem:
        return problem
    if not auth.validate_username(name):
        return f"{name!r} does not match the hub's username rules"
    if name in seen:
        return f"{name!r} is already on line {seen[name]} of this batch"
    if name in auth.admin_users:
        return f"{name!r} is the admin's name: the admin signs up with the bootstrap secret"
    if auth.user_exists(name) or name in _SIGNING_UP or orm.User.find(handler.db, name):
        return f"the username {name!r} is taken"
    for group in groups:
        if not GROUP_NAME.match(group):
            return f"{group!r} is not a group name (letters, digits, '.', '_' and '-', at most 64)"
        if not create_groups and orm.Group.find(handler.db, group) is None:
            return f"there is no group {group!r}: make it on the Policies page, or tick 'create missing groups'"
    return None


async def create_people(handler, admin, batch: Batch, create_groups: bool) -> tuple[list[dict], list[dict]]:
    """Create the batch's good lines (approved, a generated passphrase, their groups, a password to choose at first
    login); the bad ones come back with the reason. Names are held while their hashes are made, off the event
    loop, so a signup at the same moment cannot take one."""
    auth = handler.authenticator
    refused = list(batch.refused)
    good: list[tuple[Entry, str]] = []
    seen: dict[str, int] = {}
    for entry in batch.entries:
        name = auth.normalize_username(entry.name)
        problem = entry_problem(handler, name, entry.groups, create_groups, seen)
        if problem:
            refused.append({"line": entry.line, "text": entry.name, "reason": problem})
            continue
        seen[name] = entry.line
        good.append((entry, name))
    names = [name for _, name in good]
    _SIGNING_UP.update(names)
    try:
        passwords = [generate_passphrase() for _ in good]
        hashes = await asyncio.gather(*(hash_password(password) for password in passwords))
        created = []
        address = client_address(handler.request)
        for (entry, name), password, hashed in zip(good, passwords, hashes):
            if auth.user_exists(name) or orm.User.find(handler.db, name):  # made while the hashes ran
                refused.append({"line": entry.line, "text": entry.name, "reason": f"the username {name!r} is taken"})
                continue
            auth.store_account(name, "", hashed=hashed, approved=True)
            DUE.mark(handler.db, name, "batch-create")
            user = handler.user_from_username(name)
            try:
                await maybe_future(auth.add_user(user))
            except Exception as exc:  # the authenticator refused: undo this one, go on with the others
                handler.log.error("batch: could not add %s: %s", name, exc)
                handler.users.delete(user)
                auth.db.delete(auth.get_user(name))
                auth.db.commit()
                DUE.clear(handler.db, name)
                refused.append({"line": entry.line, "text": entry.name, "reason": f"the hub refused it: {exc}"})
                continue
            for group_name in entry.groups:
                group = orm.Group.find(handler.db, group_name)
                if group is None:
                    group = orm.Group(name=group_name)
                    handler.db.add(group)
                user.orm_user.groups.append(group)
            handler.db.commit()
            record(handler.db, admin.name, "batch-create", name, address, {"groups": list(entry.groups)})
            created.append({"line": entry.line, "name": name, "password": password, "groups": list(entry.groups)})
            await asyncio.sleep(0)  # a few ms of database work an account: let other requests in between accounts
    finally:
        _SIGNING_UP.difference_update(names)
    refused.sort(key=lambda item: item["line"])
    handler.log.info("batch: %s created %d accounts, refused %d lines", admin.name, len(created), len(refused))
    return created, refused


class PasswordResetAPIHandler(APIHandler):
    """POST /api/hubforge/people/:name/password-reset -- a new passphrase, shown once (admins, admin:users)."""

    async def post(self, raw_name: str):
        admin = authorize(self, None, admin_only=True, scope="admin:users")
        if not manages_passwords(self):
            raise web.HTTPError(409, OIDC_REFUSAL)
        name = normalized_target(self.authenticator, raw_name)
        self.finish(json.dumps(await reset_password(self, admin, name)))


class PeoplePageHandler(BaseHandler):
    """GET /hubforge/people -- add people in a batch, reset a password, see who must still choose theirs."""

    @web.authenticated
    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:users")
        native = manages_passwords(self)
        self.finish(
            await self.render_template(
                "hubforge-people.html",
                native=native,
                oidc_refusal=OIDC_REFUSAL,
                people=account_listing(self) if native else [],
                groups=sorted(group.name for group in self.db.query(orm.Group)),
                batch_max=BATCH_MAX,
            )
        )


handlers = [
    (r"/api/hubforge/people", PeopleAPIHandler),
    (r"/api/hubforge/people/([^/]+)/password-reset", PasswordResetAPIHandler),
    (r"/hubforge/people", PeoplePageHandler),
]
