"""AUTHENTICATOR=oidc: oauthenticator's GenericOAuthenticator, with hubforge's pages, username rules and access checks.

The provider decides who someone is and which groups they are in; hub_ext.settings.oidc decides, as plain data, who gets
in and into which hub groups. What this class adds to oauthenticator:
- access is asked again at every login and every OIDC_RECHECK_SECONDS while signed in (with the stored token), and
  whoever has lost it is refused with a page that says why, and their servers are stopped. The allow-lists decide
  each time: a name taken out of OIDC_ALLOWED_USERS, or a member taken out of an allowed group, is out, however long
  they have been a hub user (JupyterHub's allow_existing_users stays off). The recheck also runs on its own for every
  user with a running server, so that one who never comes back to the hub (a terminal left open) is stopped too;
- the built-in groups (docker-sock, docker-privileged) never come from a provider group of the same name: they
  follow OIDC_GROUP_MAP when it is set, and the admins otherwise;
- a username from a claim obeys the same rules as a signup's, and a refusal names the rule.
"""

from __future__ import annotations

import asyncio
import logging

from jupyterhub import orm
from jupyterhub.crypto import decrypt
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import List, Tuple, Unicode, default

from hub_ext.auth import rules
from hub_ext.authenticators.native import HubforgeAuthMixin
from hub_ext.settings.oidc import groups_from_claims, hub_groups, refusal_message
from hub_ext.spawn.spawner import stop_every_server

audit = logging.getLogger("hubforge.audit")
GROUPS_KEY = "hubforge_groups"  # where the hub groups of a sign-in are kept in its auth_state (auth_state_groups_key)


class OIDCCallbackHandler(OAuthCallbackHandler):
    """oauthenticator's callback, whose refusal says why (the authenticator leaves the reason on the handler)."""

    async def get(self):
        self.check_arguments()
        user = await self.login_user()
        if user is None:
            raise web.HTTPError(403, getattr(self, "hubforge_refusal", None) or self.authenticator.custom_403_message)
        self.redirect(self.get_next_url(user))


class HubforgeOIDCAuthenticator(HubforgeAuthMixin, GenericOAuthenticator):
    """Sign-in at an OpenID Connect provider; see the module's docstring for what hubforge adds."""

    callback_handler = OIDCCallbackHandler

    groups_claim = Unicode(
        "groups",
        config=True,
        help="The claim that lists a user's groups at the provider (OIDC_GROUPS_CLAIM); dots name a nested claim.",
    )
    group_map = List(
        Tuple(Unicode(), Unicode()),
        config=True,
        help="""Provider groups mapped onto hubforge's built-in groups, as (provider group, built-in group) pairs
        (OIDC_GROUP_MAP). Empty: the built-in groups are managed by the hub's admins, as with NativeAuthenticator.""",
    )
    who_gets_in = Unicode(
        "",
        config=True,
        help="Who this hub lets in, in words, for the refusal page (from hub_ext.settings.oidc.OIDCConfig).",
    )

    hub = None  # the JupyterHub application, for what no request starts: the recheck of idle users' servers
    rechecking: asyncio.Task | None = None  # recheck_forever, kept so that it is not garbage-collected

    @default("allow_existing_users")
    def _only_the_allow_lists(self):
        # With it on, every user in the hub's database stays allowed for ever (JupyterHub turns it on whenever
        # allowed_users is set; oauthenticator 16+ happens not to): a name taken out of OIDC_ALLOWED_USERS would
        # still get in. Who gets in is decided by the allow-lists at every login and recheck, and by nothing else.
        return False

    def get_handlers(self, app):
        # The one hook that hands an authenticator the application: the recheck of idle users needs its users, proxy
        # and event loop (this runs inside JupyterHub.initialize, on that loop).
        self.hub = app
        if self.auth_refresh_age and not self.allow_all:
            self.rechecking = asyncio.get_running_loop().create_task(self.recheck_forever())
        return self.hubforge_handlers(app, super().get_handlers(app))

    # -- groups ---------------------------------------------------------------------------------------------
    async def update_auth_model(self, auth_model):
        """The hub groups of this sign-in, decided once (hub_ext.settings.oidc.hub_groups) and handed to
        oauthenticator's group
        management through the auth state: the allowed and admin groups are checked against them."""
        auth_model = await super().update_auth_model(auth_model)
        state = auth_model["auth_state"]
        claims = state.get(self.user_auth_state_key) or {}
        provider = groups_from_claims(claims, self.groups_claim)
        state[GROUPS_KEY] = sorted(hub_groups(provider, tuple(self.group_map), self.current_groups(auth_model["name"])))
        return auth_model

    def current_groups(self, name: str) -> set[str]:
        user = self.db.query(orm.User).filter(orm.User.name == name).first() if self.db is not None else None
        return {group.name for group in user.groups} if user is not None else set()

    # -- who is who: a hub user is one account at the provider ------------------------------------------------
    def subject(self, model: dict) -> str:
        """The provider's own, stable id of whoever signed in (`sub`), unlike the username claim, which a provider
        may let its users change."""
        return str(((model.get("auth_state") or {}).get(self.user_auth_state_key) or {}).get("sub") or "")

    async def bound_subject(self, name: str) -> str:
        """The `sub` that hub user `name` signed in with last (kept, encrypted, in their auth state), or ""."""
        user = self.db.query(orm.User).filter(orm.User.name == name).first() if self.db is not None else None
        if user is None or not user.encrypted_auth_state:
            return ""
        try:
            state = await decrypt(user.encrypted_auth_state)
        except Exception as exc:  # noqa: BLE001 -- a key that changed, or no key: not bound as far as we can tell
            self.log.warning("cannot read the auth state of %s: %s", name, exc)
            return ""
        return self.subject({"auth_state": state or {}})

    # -- sign-in: who is refused, and why ---------------------------------------------------------------
    async def authenticate(self, handler, data=None, **kwargs):
        model = await super().authenticate(handler, data, **kwargs)
        if model and handler is not None:
            handler.hubforge_signed_in_as = model["name"]  # the provider vouched for this name; we may still refuse it
            handler.hubforge_subject = self.subject(model)
        return model

    async def get_authenticated_user(self, handler, data):
        model = await super().get_authenticated_user(handler, data)
        name, subject = getattr(handler, "hubforge_signed_in_as", None), getattr(handler, "hubforge_subject", "")
        if name is None:
            return model
        bound = await self.bound_subject(name)
        if model is not None and bound and subject and bound != subject:
            # The name came back at the provider, now someone else's (renamed, or freed and taken): not this hub user
            audit.warning(
                "oidc-refused user=%s why='another account at the provider' sub=%s bound=%s", name, subject, bound
            )
            handler.hubforge_refusal = (
                f"The identity provider names you {name}, but this hub's user {name} belongs to "
                "another account there. Ask the hub's administrator to sort it out."
            )
            return None
        if model is not None:
            model["admin"] = bool(model.get("admin"))  # only the provider makes admins: an admin flag from before goes
            return model
        problem = rules.username_problem(name)
        if problem:
            handler.hubforge_refusal = (
                f"The identity provider names you {name!r}, which this hub cannot use as a "
                f"username: {problem} Ask the hub's administrator to choose another claim "
                "(OIDC_USERNAME_CLAIM)."
            )
            return None
        handler.hubforge_refusal = refusal_message(name, self.who_gets_in or "the users and groups the operator chose")
        if bound and bound == subject:  # the same person, who has lost access: their servers stop too
            await self.withdraw(handler, name, "refused at login")
        return None

    async def refresh_user(self, user, handler=None, **kwargs):
        """oauthenticator's refresh (the provider's userinfo, with the stored token or a refreshed one), then the same
        checks as at login: someone removed from the allowed groups loses the hub within OIDC_RECHECK_SECONDS, and an
        account the provider now names differently, or a different account, signs in again."""
        try:
            model = await super().refresh_user(user, handler, **kwargs)
        except web.HTTPError as exc:  # OIDC_CLAIMS_FROM=id_token: the stored ID token has expired; sign in again
            self.log.info("%s signs in again: %s", user.name, exc.log_message)
            return False
        except (HTTPClientError, OSError) as exc:  # the provider is down or unreachable: nothing new to go by
            self.log.warning(
                "cannot recheck %s at the identity provider (%s): unchanged until it answers", user.name, exc
            )
            return True
        if not isinstance(model, dict):
            return model
        bound = self.subject({"auth_state": await user.get_auth_state() or {}})
        if model["name"] != user.name or (bound and self.subject(model) != bound):
            self.log.warning(
                "%s is now %r (sub %s) at the identity provider: signs in again",
                user.name,
                model["name"],
                self.subject(model),
            )
            return False
        model["admin"] = bool(model.get("admin"))
        if not self.allow_all and not await self.check_allowed(user.name, model):
            self.log.warning("%s has lost access at the identity provider", user.name)
            await self.withdraw(handler, user.name, "lost access at the provider")
            return False
        return model

    async def withdraw(self, handler, name: str, why: str) -> None:
        """Stop every server of a user who may no longer use the hub (their files stay). `handler` is None when the
        periodic recheck found it: no request is under way."""
        user = handler.find_user(name) if handler is not None else self.hub_user(name)
        if user is None:
            return
        proxy = handler.proxy if handler is not None else self.hub.proxy
        stopped, errors = await stop_every_server(user, proxy, self.log)
        audit.info(
            "oidc-withdraw user=%s why=%r stopped=%s%s",
            name,
            why,
            ",".join(stopped) or "-",
            f" could-not-stop={'; '.join(errors)!r}" if errors else "",
        )

    def hub_user(self, name: str):
        if self.hub is None:
            return None
        try:
            return self.hub.users[name]
        except KeyError:
            return None

    # -- the recheck that no request starts ---------------------------------------------------------------------
    async def recheck_forever(self) -> None:
        """Every OIDC_RECHECK_SECONDS, the recheck of every user with a running server. A request from the user
        rechecks them too (JupyterHub's auth_refresh_age), but one who never makes another (a kernel or terminal
        left running, a websocket already open) would keep their server: here their access is asked for anyway."""
        while True:
            await asyncio.sleep(self.auth_refresh_age)
            try:
                await self.recheck_all()
            except Exception:  # noqa: BLE001 -- one bad round must not end the rechecks for good
                self.log.exception("the recheck of running servers failed; trying again in %s s", self.auth_refresh_age)

    async def recheck_all(self) -> list[str]:
        """Recheck every user with a running server (refresh_user stops whoever has lost access); the names stopped."""
        running = [
            user
            for user in list(self.hub.users.values())
            if any(s.active and not s.pending for s in user.spawners.values())
        ]
        stopped = []
        for user in running:
            try:
                model = await self.refresh_user(user, None)
            except Exception:  # noqa: BLE001 -- the provider's 5xx for one user: the others are still rechecked
                self.log.exception(
                    "cannot recheck %s at the identity provider: unchanged until the next recheck", user.name
                )
                continue
            if isinstance(model, dict) and model.get("auth_state"):
                # a token refreshed by this recheck replaces the stored one (a provider that rotates refresh tokens
                # has already invalidated the old one)
                await user.save_auth_state(model["auth_state"])
            if not any(s.active for s in user.spawners.values()):
                stopped.append(user.name)
        return stopped
