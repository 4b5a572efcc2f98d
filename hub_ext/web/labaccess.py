"""Admins do not open users' labs unless the operator allows it (LAB_ADMIN_ACCESS).

JupyterHub's admin role holds `access:servers` and cannot be edited. A lab's own JavaScript -- which its
user controls through an extension in their persistent home -- runs with the rights of whoever opens the
lab, so an admin who opens a lab lends it the admin's session. The hub stops that where a browser gets
into a lab: the OAuth authorization for the lab's client. An admin still starts, stops, restarts and
resets other users' servers; what is refused is the token that opens the lab itself. A server its owner
shared with the admin (JupyterHub's sharing) still opens: the owner asked for it.
"""

from __future__ import annotations

from jupyterhub import orm
from jupyterhub.apihandlers.auth import OAuthAuthorizeHandler
from tornado import web


def refusal(viewer: orm.User, spawner: orm.Spawner | None, *, admin_access: bool, shared: bool) -> str | None:
    """Why `viewer` may not open the lab of `spawner`, or None when they may. Pure, for unit tests.

    Only admins are refused: whoever else got this far holds their access from a role or a share the
    operator or the owner gave them, which JupyterHub has already checked.
    """
    if spawner is None or admin_access or not viewer.admin:
        return None
    owner = spawner.user
    if owner is None or owner.id == viewer.id or shared:
        return None
    return (
        f"Admins do not open other users' servers on this hub, so that {owner.name}'s code cannot act "
        f"with your rights. You can still stop, start, restart and reset {owner.name}'s server from the "
        "admin page; the operator can allow access with LAB_ADMIN_ACCESS=1."
    )


def is_shared(db, viewer: orm.User, spawner: orm.Spawner) -> bool:
    group_ids = [group.id for group in viewer.groups]
    query = db.query(orm.Share).filter(orm.Share.spawner_id == spawner.id)
    return any(share.user_id == viewer.id or share.group_id in group_ids for share in query)


class LabAuthorizeHandler(OAuthAuthorizeHandler):
    """JupyterHub's OAuth authorization, refusing admins the token for another user's lab."""

    def check_lab_access(self) -> None:
        client_id = self.get_argument("client_id", None)
        user = self.current_user
        admin_access = self.authenticator.admin_lab_access
        if not client_id or user is None or admin_access or not user.admin:
            return  # no question for this hub (JupyterHub's own handling answers the rest): no database query
        client = self.db.query(orm.OAuthClient).filter_by(identifier=client_id).first()
        spawner = client.spawner if client is not None else None
        reason = refusal(
            user.orm_user,
            spawner,
            admin_access=admin_access,
            shared=spawner is not None and is_shared(self.db, user.orm_user, spawner),
        )
        if reason:
            self.log.warning(
                "hubforge audit: %s was refused the lab of %s (LAB_ADMIN_ACCESS=0)", user.name, spawner.user.name
            )
            raise web.HTTPError(403, reason)

    async def get(self):
        if self.current_user is not None:
            self.check_lab_access()
        return await super().get()

    @web.authenticated
    def post(self):
        self.check_lab_access()
        return super().post()


handlers = [(r"/api/oauth2/authorize", LabAuthorizeHandler)]
