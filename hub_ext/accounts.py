"""Signup and approval done safely: rules that name themselves, explicit POST actions, an admin bootstrap secret.

NativeAuthenticator's approval is a GET toggle that any link can trigger; here every change is an
explicit, idempotent POST with XSRF, and a GET never changes anything.
"""

from __future__ import annotations

import hmac
import re
import secrets
from pathlib import Path

from jupyterhub.handlers.base import BaseHandler
from tornado import web

from .handlers import authorize

USERNAME_MAX = 64
_FORBIDDEN = re.compile(r"[\s,/\\]")
ACTIONS = ("approve", "unapprove", "discard")


def username_problem(name: str) -> str | None:
    """Why a signup name is refused, naming the rule; None when it is fine."""
    if not name:
        return "Choose a username."
    if len(name) > USERNAME_MAX:
        return f"Usernames are at most {USERNAME_MAX} characters (this one has {len(name)})."
    bad = _FORBIDDEN.search(name)
    if bad:
        shown = {" ": "a space", ",": "a comma", "/": "a slash", "\\": "a backslash"}.get(bad.group(), "white space")
        return f"Usernames cannot contain spaces, commas or slashes; {name!r} contains {shown}."
    return None


def password_problem(password: str, confirmation: str, minimum: int, common: bool) -> str | None:
    """Why a password is refused, naming the rule; None when it is fine."""
    if not password:
        return "The password is empty."
    if len(password) < minimum:
        return f"Passwords need at least {minimum} characters (this one has {len(password)})."
    if common:
        return "This password is on the list of common passwords; choose another."
    if password != confirmation:
        return "The password and its confirmation differ."
    return None


class BootstrapSecret:
    """The one-time secret the admin's first signup needs. It lives only in the hub's data volume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ensure(self) -> str:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(secrets.token_urlsafe(18) + "\n")
            self.path.chmod(0o600)
        return self.path.read_text().strip()

    def matches(self, offered: str) -> bool:
        return self.path.exists() and hmac.compare_digest(offered.strip(), self.path.read_text().strip())

    def consume(self) -> None:
        self.path.unlink(missing_ok=True)


def normalized_target(authenticator, name: str) -> str:
    """A username from a URL: 400 when malformed, the normalised form otherwise."""
    if username_problem(name):
        raise web.HTTPError(400, f"not a valid username: {name!r}")
    return authenticator.normalize_username(name)


class SignupHandler(BaseHandler):
    """GET/POST /signup -- self-signup that states its rules and guards the admin's name."""

    async def get(self):
        auth = self.authenticator
        if not auth.signup_open():
            raise web.HTTPError(404)
        self.finish(await self.page())

    async def page(self, alert: str = "", message: str = "", username: str = "") -> str:
        auth = self.authenticator
        return await self.render_template(
            "hubforge-signup.html", alert=alert, result_message=message, username=username,
            minimum=auth.minimum_password_length, admin_name=sorted(auth.admin_users)[0] if auth.admin_users else "",
            admin_unclaimed=auth.admin_unclaimed(), signup_enabled=auth.enable_signup,
        )

    async def post(self):
        auth = self.authenticator
        if not auth.signup_open():
            raise web.HTTPError(404)
        username = auth.normalize_username(self.get_body_argument("username", "", strip=True))
        password = self.get_body_argument("signup_password", "", strip=False)
        confirmation = self.get_body_argument("signup_password_confirmation", "", strip=False)
        problem = username_problem(username) or password_problem(
            password, confirmation, auth.minimum_password_length,
            auth.check_common_password and auth.is_common(password))
        is_admin = username in auth.admin_users
        if problem is None and auth.user_exists(username):
            problem = f"The username {username!r} is taken."
        if problem is None and is_admin and not auth.bootstrap.matches(self.get_body_argument("bootstrap_secret", "")):
            problem = ("Signing up as the admin needs the bootstrap secret that `invoke up` printed "
                       "(it is also in the hub's data volume).")
            self.log.warning("admin signup for %s refused: wrong or missing bootstrap secret", username)
        if problem is None and not is_admin and not auth.enable_signup:
            problem = "Signup is closed; ask an admin to create your account."
        if problem:
            self.finish(await self.page("alert-danger", problem, username))
            return
        account = auth.create_user(username, password)
        if account is None:
            self.finish(await self.page("alert-danger", "The account could not be created; check the hub log.", username))
            return
        if is_admin:
            auth.bootstrap.consume()
            self.log.info("audit: admin account %s claimed with the bootstrap secret", username)
            self.finish(await self.page("alert-success", "The signup was successful! You can now log in as the admin."))
        else:
            self.finish(await self.page("alert-info", "Your information has been sent to the admin. "
                                        "You can log in once an admin approves your account."))


class AuthorizeAreaHandler(BaseHandler):
    """GET /authorize -- the admins' list of accounts, with Approve / Unapprove / Discard buttons."""

    @web.authenticated
    async def get(self):
        authorize(self, None, admin_only=True)
        from nativeauthenticator.orm import UserInfo

        accounts = sorted(self.db.query(UserInfo).all(), key=lambda a: (a.is_authorized, a.username))
        self.finish(await self.render_template("hubforge-authorize.html", accounts=accounts,
                                               message=self.get_argument("message", "")))


class ApprovalActionHandler(BaseHandler):
    """POST /authorize/:name/(approve|unapprove|discard) -- idempotent; XSRF checked by tornado."""

    @web.authenticated
    async def post(self, raw_name: str, action: str):
        admin = authorize(self, None, admin_only=True)
        auth = self.authenticator
        name = normalized_target(auth, raw_name)
        account = auth.get_user(name)
        if account is None:
            raise web.HTTPError(404, f"no account {name!r}")
        if action == "approve":
            changed = not account.is_authorized
            account.is_authorized = True
        elif action == "unapprove":
            if name in auth.admin_users:
                raise web.HTTPError(400, "the admin cannot be unapproved")
            changed = bool(account.is_authorized)
            account.is_authorized = False
        else:
            if account.is_authorized:
                raise web.HTTPError(409, f"{name} is approved: unapprove before discarding")
            changed = True
            self.db.delete(account)
        self.db.commit()
        self.log.info("audit: approval by=%s user=%s action=%s changed=%s", admin.name, name, action, changed)
        self.redirect(self.hub.base_url + "authorize?message=" + f"{name}: {action} done")


class NoChangeHandler(BaseHandler):
    """GET /authorize/:name and /discard/:name -- old toggle links: show the page, change nothing."""

    async def get(self, name: str):
        self.redirect(self.hub.base_url + "authorize")


handlers = [
    (r"/signup", SignupHandler),
    (r"/authorize", AuthorizeAreaHandler),
    (r"/authorize/([^/]+)/(approve|unapprove|discard)", ApprovalActionHandler),
    (r"/authorize/([^/]*)", NoChangeHandler),
    (r"/discard/([^/]*)", NoChangeHandler),
]
