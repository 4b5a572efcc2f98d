"""The authenticator: NativeAuthenticator plus hub_ext's pages and APIs.

hub_ext registers its routes through `Authenticator.get_handlers`, the supported hook that
NativeAuthenticator itself uses for /signup and /authorize: no JupyterHub subclass, no extra process,
and the handlers run in the hub with its sessions, XSRF checks, scopes and spawners.
"""

from __future__ import annotations

from pathlib import Path

from nativeauthenticator import NativeAuthenticator

from .handlers import default_handlers

TEMPLATES = str(Path(__file__).parent / "templates")


class HubforgeAuthenticator(NativeAuthenticator):
    def get_handlers(self, app):
        return super().get_handlers(app) + list(default_handlers)
