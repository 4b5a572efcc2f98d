"""Signup and approval done safely: rules that name themselves, explicit POST actions, an admin bootstrap secret.

NativeAuthenticator's approval is a GET toggle that any link can trigger; here every change is an
explicit, idempotent POST with XSRF, and a GET never changes anything.
"""

from __future__ import annotations

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from nativeauthenticator.handlers import LoginHandler as NativeLoginHandler
from tornado import web

from hub_ext.auth.audit import record
from hub_ext.auth.passwords import hash_password
from hub_ext.auth.people import DUE, generate_passphrase
from hub_ext.auth.rules import (
    end_credentials,
    loggable,
    password_problem,
    username_problem,
)
from hub_ext.auth.throttle import LoginRefused, client_address, describe_wait
from hub_ext.spawn.spawner import stop_every_server, user_lock
from hub_ext.web.selfservice import audit, authorize, spawner_of

ACTIONS = ("approve", "unapprove", "discard")
DUE_MESSAGE = (
    "An admin made or reset your account: choose a password of your own before anything else opens. "
    "Your current password is the one the admin gave you."
)


# Names whose signup is hashing its password. The check that a name is free and the row that takes it are a
# bcrypt apart, off the event loop: without this, simultaneous signups for one name all found it free.
_SIGNING_UP: set[str] = set()


def normalized_target(authenticator, name: str) -> str:
    """A username from a URL: 400 when malformed, the normalised form otherwise."""
    if username_problem(name, reserved_too=False):
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
            "hubforge-signup.html",
            alert=alert,
            result_message=message,
            username=username,
            minimum=auth.minimum_password_length,
            admin_name=sorted(auth.admin_users)[0] if auth.admin_users else "",
            admin_unclaimed=auth.admin_unclaimed(),
            signup_enabled=auth.enable_signup,
        )

    async def post(self):

        auth = self.authenticator
        if not auth.signup_open():
            raise web.HTTPError(404)
        address = client_address(self.request)
        wait = auth.signup_wait(address)  # every signup attempt spends the address's budget
        if wait > 0:
            self.set_status(429)
            self.finish(
                await self.page(
                    "alert-danger", f"Too many attempts from your address; try again in {describe_wait(wait)}."
                )
            )
            return
        username = auth.normalize_username(self.get_body_argument("username", "", strip=True))
        password = self.get_body_argument("signup_password", "", strip=False)
        confirmation = self.get_body_argument("signup_password_confirmation", "", strip=False)
        problem = username_problem(username) or password_problem(
            password,
            confirmation,
            auth.minimum_password_length,
            auth.check_common_password and auth.is_common(password),
        )
        is_admin = username in auth.admin_users
        if problem is None and (
            auth.user_exists(username) or username in _SIGNING_UP or (not is_admin and orm.User.find(self.db, username))
        ):
            # a hub user without an account is a leftover (deleted from NativeAuthenticator's table by hand or
            # by an older hubforge): a new account must not inherit its groups, tokens or volumes
            problem = f"The username {username!r} is taken."
        if problem is None and is_admin and not auth.bootstrap.matches(self.get_body_argument("bootstrap_secret", "")):
            problem = (
                "Signing up as the admin needs the bootstrap secret that `invoke up` printed "
                "(it is also in the hub's data volume)."
            )
            self.log.warning("admin signup for %s refused: wrong or missing bootstrap secret", loggable(username))
        if problem is None and not is_admin and not auth.enable_signup:
            problem = "Signup is closed; ask an admin to create your account."
        if problem:
            self.finish(await self.page("alert-danger", problem, username))
            return
        # Made here, not by NativeAuthenticator's create_user: that one hashes on the event loop and
        # refuses while signup is off, which is exactly when the admin's bootstrap signup must work.
        _SIGNING_UP.add(username)
        try:
            hashed = await hash_password(password)
            # an admin may have added the user while the hash ran
            account = (
                None
                if auth.user_exists(username)
                else auth.store_account(username, password, hashed=hashed, approved=is_admin)
            )
        finally:
            _SIGNING_UP.discard(username)
        if account is None:
            self.finish(await self.page("alert-danger", f"The username {username!r} is taken.", username))
            return
        record(self.db, account.username, "signup", account.username, address, {"approved": is_admin})
        if is_admin:
            auth.bootstrap.consume()
            self.log.info("audit: admin account %s claimed with the bootstrap secret", loggable(username))
            self.finish(await self.page("alert-success", "The signup was successful! You can now log in as the admin."))
        else:
            self.finish(
                await self.page(
                    "alert-info",
                    "Your information has been sent to the admin. You can log in once an admin approves your account.",
                )
            )


class LoginHandler(NativeLoginHandler):
    """POST /login -- the password checked in a worker thread, throttled per account and address.

    NativeAuthenticator's own handler reads `self.statsd` (gone in JupyterHub 6), checks bcrypt on the
    event loop twice for a failed login, and tells a pending account's right password apart without any
    limit. Here a throttled try answers 429 with the wait, and "not approved yet" is said only for a try
    that the throttle let through.
    """

    async def post(self):

        data = {arg: self.get_argument(arg, strip=False) for arg in self.request.arguments}
        data.setdefault("username", "")
        data.setdefault("password", "")
        try:
            user = await self.login_user(data)
        except LoginRefused as exc:
            self.set_status(429)
            self.set_header("Retry-After", str(max(1, round(exc.wait))))
            self.finish(await self._render(login_error=str(exc), username=data["username"]))
            return
        if user:
            self._jupyterhub_user = user
            self.redirect(self.get_next_url(user))
            return
        error = "Invalid username or password."
        if getattr(self, "hubforge_pending", False):
            error = f"User {data['username']} has not been authorized by an administrator yet."
        self.finish(await self._render(login_error=error, username=data["username"]))

    def _render(self, login_error=None, username=None, sync=False, **_error_details):
        """JupyterHub shows a failed form post (an expired XSRF token, say) as the login form with the
        message, rendering it with `sync=True` and the error's details; NativeAuthenticator's `_render`
        takes neither, so the page came out blank. Pass `sync` on, drop the rest."""
        self._render_sync = sync
        try:
            return super()._render(login_error=login_error, username=username)
        finally:
            self._render_sync = False

    def render_template(self, name, sync=False, **ns):
        return super().render_template(name, sync=sync or getattr(self, "_render_sync", False), **ns)


class ChangePasswordHandler(BaseHandler):
    """GET/POST /change-password -- users change their own password (NativeAuthenticator's page, as it looks).

    NativeAuthenticator's own handler checks the current password with bcrypt on the event loop, without any
    limit: 20 wrong posts froze every page of the hub for seconds, and guessed on unthrottled. Here the current
    password goes through login's own path (`password_holder`: throttled per account and address, checked in
    the hashing pool), a throttled try answers 429 with the wait, and the new password follows the signup rules.
    """

    async def page(self, alert: str = "", message: str = "") -> str:
        if not message and DUE.is_due(self.db, self.current_user.name):
            alert, message = "alert-warning", DUE_MESSAGE
        return await self.render_template(
            "change-password.html", user_name=self.current_user.name, result_message=message, alert=alert
        )

    @web.authenticated
    async def get(self):
        self.finish(await self.page())

    @web.authenticated
    async def post(self):

        auth, name = self.authenticator, self.current_user.name
        address = client_address(self.request)
        new = self.get_body_argument("new_password", "", strip=False)
        confirmation = self.get_body_argument("new_password_confirmation", "", strip=False)
        try:
            account = await auth.password_holder(
                name, self.get_body_argument("old_password", "", strip=False), address, "change-password"
            )
        except LoginRefused as exc:
            self.set_status(429)
            self.set_header("Retry-After", str(max(1, round(exc.wait))))
            self.finish(
                await self.page(
                    "alert-danger",
                    f"Too many wrong passwords from your address; try again in {describe_wait(exc.wait)}.",
                )
            )
            return
        if account is None:
            self.log.warning(
                "change-password for %s from %s: wrong current password", loggable(name), loggable(address)
            )
            self.finish(await self.page("alert-danger", "Your current password was incorrect. Please try again."))
            return
        auth.throttle.succeeded(name, address)  # the right password: this try costs nothing, as a login
        problem = password_problem(
            new, confirmation, auth.minimum_password_length, auth.check_common_password and auth.is_common(new)
        )
        due = DUE.is_due(self.db, name)
        if problem is None and due and new == self.get_body_argument("old_password", "", strip=False):
            problem = "Choose a password of your own, not the one you were given."
        if problem:
            self.finish(await self.page("alert-danger", problem))
            return
        account.password = await hash_password(new)
        self.db.commit()
        DUE.clear(self.db, name)
        record(self.db, name, "password-change", name, address, {"was_due": due} if due else None)
        if due:  # the hub opens now: on to where the login was going
            self.redirect(self.get_next_url(self.current_user))
            return
        self.finish(await self.page("alert-success", "Your password has been changed successfully!"))


class ChangePasswordAdminHandler(BaseHandler):
    """GET/POST /change-password/:name -- an admin sets a user's password (one they forgot, or a user the admin
    added). NativeAuthenticator's page as it looks; the new password is hashed in the pool, not on the event loop."""

    async def page(self, name: str, alert: str = "", message: str = "") -> str:
        return await self.render_template(
            "change-password-admin.html", user_name=name, result_message=message, alert=alert
        )

    def target(self, raw_name: str):
        account = self.authenticator.get_user(normalized_target(self.authenticator, raw_name))
        if account is None:
            raise web.HTTPError(404, f"no account {raw_name!r}")
        return account

    @web.authenticated
    async def get(self, raw_name: str):
        authorize(self, None, admin_only=True, scope="admin:users")
        self.finish(await self.page(self.target(raw_name).username))

    @web.authenticated
    async def post(self, raw_name: str):

        admin = authorize(self, None, admin_only=True, scope="admin:users")
        auth, account = self.authenticator, self.target(raw_name)
        new = self.get_body_argument("new_password", "", strip=False)
        problem = password_problem(
            new,
            self.get_body_argument("new_password_confirmation", "", strip=False),
            auth.minimum_password_length,
            auth.check_common_password and auth.is_common(new),
        )
        if problem:
            self.finish(await self.page(account.username, "alert-danger", problem))
            return
        ended = await reset_password(self, admin, account.username, new)
        self.finish(
            await self.page(
                account.username,
                "alert-success",
                f"The password for {account.username} has been changed successfully. They must choose their own at "
                f"their next login; {ended.get('tokens_ended', 0)} tokens and their sessions ended, "
                f"{ended.get('servers_stopped', 0)} servers stopped.",
            )
        )


class AuthorizeAreaHandler(BaseHandler):
    """GET /authorize -- the admins' list of accounts, with Approve / Unapprove / Discard buttons."""

    @web.authenticated
    async def get(self):
        authorize(self, None, admin_only=True, scope="admin:users")
        from nativeauthenticator.orm import UserInfo

        accounts = sorted(self.db.query(UserInfo).all(), key=lambda a: (a.is_authorized, a.username))
        self.finish(
            await self.render_template(
                "hubforge-authorize.html",
                accounts=accounts,
                admin_users=self.authenticator.admin_users,
                message=self.get_argument("message", ""),
            )
        )


class ApprovalActionHandler(BaseHandler):
    """POST /authorize/:name/(approve|unapprove|discard) -- idempotent; XSRF checked by tornado."""

    @web.authenticated
    async def post(self, raw_name: str, action: str):
        admin = authorize(self, None, admin_only=True, scope="admin:users")
        auth = self.authenticator
        name = normalized_target(auth, raw_name)
        account = auth.get_user(name)
        if account is None and not (action == "discard" and self.find_user(name)):
            if action == "discard":  # a retried discard: the first one finished
                self.redirect(self.hub.base_url + "authorize?message=" + f"{name}: nothing left to discard")
                return
            raise web.HTTPError(404, f"no account {name!r}")
        detail = ""
        if action == "approve":
            changed = not account.is_authorized
            account.is_authorized = True
            self.db.commit()
        elif action == "unapprove":
            if name in auth.admin_users:
                raise web.HTTPError(400, "the admin cannot be unapproved")
            changed = bool(account.is_authorized)
            account.is_authorized = False
            self.db.commit()
            detail = await self.revoke(name, delete=False)
        else:
            if account is not None and account.is_authorized:
                raise web.HTTPError(409, f"{name} is approved: unapprove before discarding")
            if self.get_body_argument("confirm", "").strip() != name:
                raise web.HTTPError(400, f"type {name!r} to confirm: discarding deletes the account and its volumes")
            changed = True
            # the account row goes last: a discard that fails half-way leaves it, so the admin can simply retry
            detail = await self.revoke(name, delete=True)
            if account is not None:
                self.db.delete(account)
                self.db.commit()
        record(
            self.db,
            admin.name,
            action,
            name,
            client_address(self.request),
            {"changed": changed, "detail": detail},
        )
        self.redirect(
            self.hub.base_url + "authorize?message=" + f"{name}: {action} done" + (f" ({detail})" if detail else "")
        )

    async def revoke(self, name: str, delete: bool) -> str:
        """Take away everything an account gave, credentials first: tokens (API and OAuth) and sessions end before
        anything can wait, then the servers stop (a start still pending is cancelled), and with `delete` the hub
        user goes with its groups and roles, and its spawner's delete_forever removes its volumes."""
        user = self.find_user(name)
        if user is None:
            return "no hub user"
        tokens = end_credentials(self.db, user)
        stopped = await self.stop_servers(user)
        if not delete:
            return f"{len(tokens)} tokens revoked, sessions ended, {stopped}"
        async with user_lock(name):
            removed = await spawner_of(user).delete_forever()  # what JupyterHub's own user deletion calls
            self.users.delete(user)
        gone = ",".join(r["volume"] for r in removed if r["result"] in ("removed", "not found"))
        failed = [f"{r['volume']}: {r.get('reason')}" for r in removed if r["result"] == "failed"]
        if failed:
            audit.warning("discard of %s could not delete volumes: %s", name, "; ".join(failed))
        return f"hub user deleted, volumes deleted: {gone}" + (f"; NOT deleted: {'; '.join(failed)}" if failed else "")

    async def stop_servers(self, user) -> str:
        """Stop every server of the user, never failing the request (hub_ext.spawn.spawner.stop_every_server)."""
        stopped, errors = await stop_every_server(user, self.proxy, self.log)
        said = f"{len(stopped)} server{'s' if len(stopped) != 1 else ''} stopped"
        return said + (f"; could NOT stop {'; '.join(errors)}" if errors else "")


async def end_sessions(handler, user) -> dict:
    """A reset's consequences for the user: every token and login cookie ends, and their servers stop (their own
    server token is one of those tokens)."""
    tokens = end_credentials(handler.db, user)
    stopped, errors = await stop_every_server(user, handler.proxy, handler.log)
    return {"tokens_ended": len(tokens), "servers_stopped": len(stopped), "stop_errors": errors}


async def reset_password(handler, admin, name: str, password: str | None = None) -> dict:
    """Give the account a new password (a generated passphrase unless the admin chose one): its sessions, tokens and
    servers end, and it must choose its own password at its next login."""
    auth = handler.authenticator
    account = auth.get_user(name)
    if account is None:
        raise web.HTTPError(404, f"no account {name!r}")
    if name == admin.name:
        raise web.HTTPError(400, "change your own password at /hub/change-password, not by a reset")
    generated = password is None
    password = generate_passphrase() if generated else password
    account.password = await hash_password(password)
    auth.db.commit()
    DUE.mark(handler.db, name, "password-reset")
    user = handler.find_user(name)
    ended = await end_sessions(handler, user) if user is not None else {}  # credentials first, then the servers
    address = client_address(handler.request)
    record(handler.db, admin.name, "password-reset", name, address, {"generated": generated, **ended})
    return {"name": name, **({"password": password} if generated else {}), **ended}


class NoChangeHandler(BaseHandler):
    """GET /authorize/:name and /discard/:name -- old toggle links: show the page, change nothing."""

    async def get(self, name: str):
        self.redirect(self.hub.base_url + "authorize")


handlers = [
    (r"/login", LoginHandler),
    (r"/signup", SignupHandler),
    (r"/change-password", ChangePasswordHandler),
    (r"/change-password/([^/]+)", ChangePasswordAdminHandler),
    (r"/authorize", AuthorizeAreaHandler),
    (r"/authorize/([^/]+)/(approve|unapprove|discard)", ApprovalActionHandler),
    (r"/authorize/([^/]*)", NoChangeHandler),
    (r"/discard/([^/]*)", NoChangeHandler),
]
