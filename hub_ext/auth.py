"""The authenticator: NativeAuthenticator plus hub_ext's pages, APIs and account bootstrap.

hub_ext registers its routes through `Authenticator.get_handlers`, the supported hook that
NativeAuthenticator itself uses for /signup and /authorize: no JupyterHub subclass, no extra process,
and the handlers run in the hub with its sessions, XSRF checks, scopes and spawners.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Unicode

from . import accounts
from .handlers import default_handlers

TEMPLATES = str(Path(__file__).parent / "templates")


class HubforgeAuthenticator(NativeAuthenticator):
    admin_password = Unicode(
        "",
        config=True,
        help="""Initial password of the admin (JUPYTERHUB_ADMIN_PASSWORD). Empty: the admin signs up instead.
        Used once, when the admin's account is first made; changing it later changes nothing.""",
    )

    bootstrap_secret_file = Unicode(
        "/srv/jupyterhub/data/admin-bootstrap-secret",
        config=True,
        help="Where the admin's one-time signup secret is kept (the hub's data volume).",
    )

    def get_handlers(self, app):
        """NativeAuthenticator's routes, with signup and approval replaced by safe ones, plus hub_ext's."""
        replaced = {route for route, _ in accounts.handlers}
        native = [(route, handler) for route, handler in super().get_handlers(app) if route not in replaced]
        return list(accounts.handlers) + native + list(default_handlers)

    @property
    def bootstrap(self) -> accounts.BootstrapSecret:
        return accounts.BootstrapSecret(Path(self.bootstrap_secret_file))

    def admin_unclaimed(self) -> bool:
        """True while no admin account exists and none will be made from JUPYTERHUB_ADMIN_PASSWORD."""
        return not self.admin_password and any(self.get_user(name) is None for name in self.admin_users)

    def signup_open(self) -> bool:
        """The signup page exists when signup is on, or while the admin has yet to claim the hub."""
        return self.enable_signup or self.admin_unclaimed()

    def is_common(self, password: str) -> bool:
        return self.is_password_common(password)

    def add_user(self, user):
        """Called when JupyterHub first creates a user: at start for the admin, or by an admin.

        No NativeAuthenticator account is made for the admin without a password: an account with
        a password nobody knows is the trap that locks a fresh deployment out. Users an admin adds
        get an approved account with an unusable password; the admin sets one at /hub/change-password/<name>.
        """
        result = super().add_user(user)
        if self.get_user(user.name) is None:
            if user.name in self.admin_users:
                if self.admin_password:
                    self.store_account(user.name, self.admin_password)
                else:
                    self.bootstrap.ensure()  # the admin's signup will need it; `invoke up` prints it
            else:
                self.store_account(user.name, secrets.token_urlsafe(32))
        return result

    def store_account(self, username: str, password: str) -> None:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        self.db.add(UserInfo(username=username, password=hashed, is_authorized=True))
        self.db.commit()
