"""The authenticator: NativeAuthenticator plus hub_ext's pages, APIs and account bootstrap.

hub_ext registers its routes through `Authenticator.get_handlers`, the supported hook that
NativeAuthenticator itself uses for /signup and /authorize: no JupyterHub subclass, no extra process,
and the handlers run in the hub with its sessions, XSRF checks, scopes and spawners.
"""

from __future__ import annotations

import asyncio
import atexit
import secrets
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Bool, Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from hub_ext.auth import rules
from hub_ext.auth.audit import ensure_table, prune, record
from hub_ext.auth.passwords import NO_ACCOUNT_HASH, password_matches
from hub_ext.auth.people import DUE
from hub_ext.auth.rules import loggable
from hub_ext.auth.throttle import LoginRefused, Throttle, client_address, describe_wait
from hub_ext.hub import activity, usage
from hub_ext.hub.culler import cull_forever
from hub_ext.settings.hub import default_of
from hub_ext.web import accounts, activitypage, audited, auditpage, labaccess, metrics, people, policies
from hub_ext.web.selfservice import default_handlers

TEMPLATES = str(Path(__file__).parents[1] / "web" / "templates")


class HubforgeAuthMixin(LoggingConfigurable):
    """What every hubforge authenticator shares, whoever checks the password: hub_ext's pages and APIs, the
    admins' lab access, and one set of username rules (NFKC, then the signup rules) for every way a user is made."""

    admin_lab_access = Bool(
        default_of("LAB_ADMIN_ACCESS"),
        config=True,
        help="Admins may open other users' labs (LAB_ADMIN_ACCESS). Off: they manage servers but never open them "
        "(hub_ext.web.labaccess says why).",
    )

    audit_retention_days = Integer(
        default_of("AUDIT_RETENTION_DAYS"),
        min=0,
        config=True,
        help="Days the audit trail keeps a record (AUDIT_RETENTION_DAYS; 0: every record).",
    )
    activity_interval = Integer(
        default_of("ACTIVITY_INTERVAL"),
        min=5,
        config=True,
        help="Seconds between two runs of the activity collector (ACTIVITY_INTERVAL): one Docker listing of every "
        "lab, and each lab's cgroup files (hub_ext.hub.activity).",
    )
    activity_retention_days = Integer(
        default_of("ACTIVITY_RETENTION_DAYS"),
        min=1,
        config=True,
        help="Days the hourly figures per user are kept (ACTIVITY_RETENTION_DAYS).",
    )
    cgroup_root = Unicode(
        "/host/sys/fs/cgroup",
        config=True,
        help="Where the host's cgroup tree is mounted in the hub (read-only), for the labs' CPU and memory.",
    )
    culling: asyncio.Task | None = None  # hub_ext.hub.culler.cull_forever, kept so that it is not garbage-collected
    activity: activity.Collector | None = None  # what the activity pages read (hub_ext.web.activitypage)
    collecting: asyncio.Task | None = None  # hub_ext.hub.activity.collect_forever

    def hubforge_handlers(self, app, own: list) -> list:
        """The authenticator's own routes between the lab-access check (first: it replaces JupyterHub's) and
        hub_ext's; and the hub's own background work that needs the application (get_handlers is the one hook that
        hands it to an authenticator, inside JupyterHub.initialize, on the hub's event loop)."""
        if app is not None:
            ensure_table(app.db)  # the audit trail's table, beside JupyterHub's own
            pruned = prune(app.db, self.audit_retention_days)
            if pruned:
                self.log.info("audit: %d records older than %d days dropped", pruned, self.audit_retention_days)
        if self.culling is None and app is not None:
            self.culling = asyncio.get_running_loop().create_task(cull_forever(app))
        if self.collecting is None and app is not None:
            self.start_activity(app)
        return (
            list(labaccess.handlers)
            + list(own)
            + list(default_handlers)
            + list(policies.handlers)
            + list(auditpage.handlers)
            + list(people.handlers)
            + list(audited.handlers)
            + list(activitypage.handlers)
        )

    def start_activity(self, app) -> None:
        """The activity collector, in the hub's event loop; what it holds is written when the hub stops."""
        pruned = usage.prune(app.db, self.activity_retention_days)  # and at every hour's write
        if pruned:
            self.log.info("activity: %d hourly figures past %d days dropped", pruned, self.activity_retention_days)
        self.activity = activity.Collector(self.activity_interval, Path(self.cgroup_root))
        metrics.watch_labs(self.activity)  # the labs' CPU, memory and kills for memory at /hub/metrics
        self.collecting = asyncio.get_running_loop().create_task(
            activity.collect_forever(app, self.activity, self.activity_retention_days)
        )
        atexit.register(activity.flush, app, self.activity)

    def normalize_username(self, username: str) -> str:
        """NFKC first, then JupyterHub's own (lower case, username_map): a full-width or ligature
        look-alike of a name is that name, at signup, at login and in the API."""
        return super().normalize_username(unicodedata.normalize("NFKC", username))

    def validate_username(self, username: str) -> bool:
        """The signup rules hold for every way a user is made, an admin's API call included (400); the API may make
        hubforge's own accounts (the upgrade's canary), which signup refuses."""
        problem = rules.username_problem(username, reserved_too=False)
        if problem:
            self.log.warning("username %r refused: %s", username, problem)
        return problem is None and super().validate_username(username)


class HubforgeAuthenticator(HubforgeAuthMixin, NativeAuthenticator):
    admin_password = Unicode(
        default_of("JUPYTERHUB_ADMIN_PASSWORD"),
        config=True,
        help="""Initial password of the admin (JUPYTERHUB_ADMIN_PASSWORD). Empty: the admin signs up instead.
        Used once, when the admin's account is first made; changing it later changes nothing.""",
    )

    bootstrap_secret_file = Unicode(
        "/srv/jupyterhub/data/admin-bootstrap-secret",
        config=True,
        help="Where the admin's one-time signup secret is kept (the hub's data volume).",
    )

    login_free_failures = Integer(
        default_of("LOGIN_MAX_FAILURES"),
        config=True,
        help="Failed logins for one account from one address before each further try must wait (LOGIN_MAX_FAILURES).",
    )
    login_max_delay = Float(
        default_of("LOGIN_LOCKOUT_SECONDS"),
        config=True,
        help="The longest wait between tries, in seconds; the wait doubles from 1 s up to this "
        "(LOGIN_LOCKOUT_SECONDS).",
    )
    login_address_limit = Integer(
        default_of("LOGIN_ADDRESS_LIMIT"),
        config=True,
        help="Failed logins plus signups one client address may make per minute (LOGIN_ADDRESS_LIMIT). "
        "Successful logins do not count, so a class behind one NAT logs in freely.",
    )

    @default("allowed_failed_logins")
    def _no_native_lockout(self):
        return 0  # NativeAuthenticator's lock-out counts per account only: anyone could lock the admin out

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = datetime.now(timezone.utc).replace(tzinfo=None)  # JupyterHub stores naive UTC
        self.throttle = Throttle(
            free_failures=self.login_free_failures,
            max_delay=self.login_max_delay,
            address_budget=self.login_address_limit,
        )

    def get_handlers(self, app):
        """NativeAuthenticator's routes, with signup and approval replaced by safe ones, plus hub_ext's."""
        replaced = {route for route, _ in accounts.handlers}
        native = [(route, handler) for route, handler in super().get_handlers(app) if route not in replaced]
        return self.hubforge_handlers(app, list(accounts.handlers) + native)

    @property
    def bootstrap(self) -> rules.BootstrapSecret:
        return rules.BootstrapSecret(Path(self.bootstrap_secret_file))

    def admin_unclaimed(self) -> bool:
        """True while no admin account exists and none will be made from JUPYTERHUB_ADMIN_PASSWORD."""
        return not self.admin_password and any(self.get_user(name) is None for name in self.admin_users)

    def may_start(self, name: str) -> str | None:
        """Why `name` may not start a lab now, or None (hub_ext.spawn.spawner asks at every start, under the user's
        lock):
        an account unapproved or discarded while its start waited for a slot stays stopped."""
        if name in self.admin_users:
            return None
        if DUE.is_due(self.db, name):
            return f"{name} must choose their own password first (at /hub/change-password); then the lab can start"
        account = self.get_user(name)
        if account is None or not account.is_authorized:
            return f"{name}'s account is not approved (it was unapproved or discarded); ask an admin"
        return None

    def signup_open(self) -> bool:
        """The signup page exists when signup is on, or while the admin has yet to claim the hub."""
        return self.enable_signup or self.admin_unclaimed()

    def is_common(self, password: str) -> bool:
        return self.is_password_common(password)

    def add_user(self, user):
        """Called for every user in the hub's database at each start, and when an admin adds a user.

        - The admin gets an account only from JUPYTERHUB_ADMIN_PASSWORD; otherwise the admin signs up
          with the bootstrap secret (an account with a password nobody knows would lock a fresh hub out).
        - A user created while this hub runs (an admin adding them, or the operator's config) gets an
          approved account with an unusable password; the admin sets one at /hub/change-password/<name>.
        - A user from before this start without an account gets none: nothing but an admin's explicit
          action approves anyone, and a restart must not bring back an account that was discarded.
        """
        result = super().add_user(user)
        if self.get_user(user.name) is None:
            if user.name in self.admin_users:
                if self.admin_password:
                    self.store_account(user.name, self.admin_password)
                else:
                    self.bootstrap.ensure()  # the admin's signup will need it; `invoke up` prints it
            elif (getattr(user, "created", None) or self.started) >= self.started:
                # a random password nobody learns: the lowest bcrypt cost is enough (there is nothing to
                # guess), and an admin adding 200 users at once does not hold the event loop for a minute
                unusable = secrets.token_urlsafe(32).encode()
                self.store_account(user.name, "", hashed=bcrypt.hashpw(unusable, bcrypt.gensalt(rounds=4)))
            else:
                self.log.warning("user %s has no account (discarded?): not making one; they cannot log in", user.name)
        return result

    def store_account(
        self, username: str, password: str, hashed: bytes | None = None, approved: bool = True
    ) -> UserInfo:
        hashed = hashed or bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        account = UserInfo(username=username, password=hashed, is_authorized=approved)
        self.db.add(account)
        self.db.commit()
        return account

    async def authenticate(self, handler, data):
        """The password checked off the event loop, with throttling per account and address.

        Raises LoginRefused while the address must wait; the login page shows it with status 429.
        A pending account's right password counts as a failure, so pending accounts are throttled too;
        `handler.hubforge_pending` tells the page to say that approval is what is missing.
        """
        username = self.normalize_username(data.get("username", ""))
        address = client_address(handler.request)
        account = await self.password_holder(username, data.get("password", ""), address, "login")
        if account is not None and account.is_authorized:
            self.throttle.succeeded(username, address)
            return username
        if account is not None:
            handler.hubforge_pending = True
        reason = "not approved yet" if account is not None else "wrong username or password"
        record(self.db, "-", "login-failed", username, address, {"reason": reason})
        return None

    async def password_holder(self, username: str, password: str, address: str, purpose: str) -> UserInfo | None:
        """The account of `username` when `password` is its password, else None: the one path for every password
        check (login, change-password). The try is reserved from the throttle before bcrypt runs, in the hashing
        pool, and stays counted as a failure; the caller gives it back (`throttle.succeeded`) only for a try that
        did what it came for. Raises LoginRefused, unchecked, while `address` must wait."""
        wait = self.throttle.reserve(username, address)
        if wait > 0:
            self.log.warning(
                "%s for %s from %s throttled for %.0f s", purpose, loggable(username), loggable(address), wait
            )
            record(self.db, "-", "throttled", username or "", address, {"purpose": purpose, "wait_s": round(wait)})
            raise LoginRefused(f"Too many failed logins from your address; try again in {describe_wait(wait)}.", wait)
        account = self.get_user(username) if username else None
        matches = await password_matches(password, account.password if account else NO_ACCOUNT_HASH)
        return account if account is not None and matches else None

    def signup_wait(self, address: str) -> float:
        """Seconds until `address` may sign up again, or 0: then this attempt has spent one of the address's budget."""
        return self.throttle.reserve(None, address)
