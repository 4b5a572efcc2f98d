"""An account an admin made or reset chooses its own password before anything else opens (issue 29, part 1).

While the account is marked (hub_ext.auth.people.DUE), every hub page it asks for leads to /hub/change-password,
and every other request it makes -- an API call from a page or with a token, the OAuth step that opens a lab, a spawn
-- is refused with one line. The change-password page, logout, login and static files stay open. (A reset ends every
token of the account and a batch-made account has none; a token made with the password in the request body is refused
while the mark stands, hub_ext.web.audited.)
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

# What a marked account may still reach, under the hub's prefix (/hub/).
OPEN_PATHS = ("change-password", "logout", "login", "static", "health", "logo", "favicon.ico")


def gated(method: str, path: str, base_url: str) -> str | None:
    """What to do with a marked account's cookie request: "redirect" (a page), "refuse" (anything else), or None.
    `base_url` is JupyterHub's (/ by default); the hub's own pages are under its hub/."""
    rest = path[len(base_url) :] if path.startswith(base_url) else path.lstrip("/")
    rest = rest.removeprefix("hub/")
    if rest.startswith("change-password/"):  # an admin's page for another account: not this account's way out
        return "refuse"
    if any(rest == open_path or rest.startswith(open_path + "/") for open_path in OPEN_PATHS):
        return None
    return "redirect" if method in ("GET", "HEAD") and not rest.startswith("api/") else "refuse"


REFUSAL = "choose your own password first, at /hub/change-password"


def install(base_url: str, is_due) -> None:
    """Run the gate in every hub page and API handler once JupyterHub has found the current user (its
    BaseHandler.prepare); `is_due(db, name)` says whether the account is marked."""
    from jupyterhub.handlers.base import BaseHandler
    from jupyterhub.user import User
    from tornado import web

    if getattr(BaseHandler.prepare, "hubforge_password_gate", False):
        return
    original = BaseHandler.prepare

    async def prepare(self):
        await original(self)
        if self._finished:
            return
        user = self.current_user
        if not isinstance(user, User):
            return
        if not is_due(self.db, user.name):
            return
        decision = gated(self.request.method, urlsplit(self.request.uri).path, base_url)
        if decision == "redirect":
            self.redirect(base_url + "hub/change-password?" + urlencode({"next": self.request.uri}))
        elif decision == "refuse":
            raise web.HTTPError(403, REFUSAL)

    prepare.hubforge_password_gate = True
    prepare.__wrapped__ = original
    BaseHandler.prepare = prepare
