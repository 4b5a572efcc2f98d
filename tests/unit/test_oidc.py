"""AUTHENTICATOR=oidc, without a hub or a provider: the settings and their one-line errors, the discovery document,
who gets into which groups, the refusal and logout, and the rendered stack's secret."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from hub_ext.settings.hub import ConfigError, from_environ
from hub_ext.settings.oidc import (
    OIDCError,
    discover,
    groups_from_claims,
    hub_groups,
    logout_url,
    parse_discovery,
    parse_oidc,
    refusal_message,
    stored_key,
)

BASE = {
    "AUTHENTICATOR": "oidc",
    "OIDC_ISSUER": "https://login.example.org/realms/team",
    "OIDC_CLIENT_ID": "hub",
    "OIDC_CLIENT_SECRET": "s3cret",
    "OIDC_ALLOWED_GROUPS": "data-science",
}


def test_native_stays_the_default_and_ignores_oidc_settings():
    config = from_environ({"OIDC_ISSUER": "not even a url"})
    assert config.authenticator == "native" and config.oidc is None


def test_oidc_settings_and_their_defaults():
    config = from_environ(
        {
            **BASE,
            "OIDC_ALLOWED_USERS": "Ada, bob",
            "OIDC_ADMIN_GROUPS": "hub admins,ops",
            "OIDC_GROUP_MAP": "platform=docker-sock",
            "OIDC_SCOPES": "openid,profile email groups",
        }
    ).oidc
    assert config.issuer == "https://login.example.org/realms/team" and config.client_secret == "s3cret"
    assert config.allowed_users == {"ada", "bob"} and config.allowed_groups == {"data-science"}
    assert config.admin_groups == {"hub admins", "ops"}  # group names keep spaces and case
    assert config.group_map == (("platform", "docker-sock"),)
    assert config.scopes == ("openid", "profile", "email", "groups")
    assert (config.username_claim, config.groups_claim, config.claims_from) == (
        "preferred_username",
        "groups",
        "userinfo",
    )
    assert (config.login_name, config.logout_provider, config.start_wait, config.recheck_seconds) == (
        "OpenID Connect",
        False,
        30,
        300,
    )
    assert "s3cret" not in repr(config)  # never in a log line or a traceback's locals
    assert config.who_gets_in == "members of data-science and the users ada, bob"


def test_the_client_secret_comes_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    env = {**BASE, "OIDC_CLIENT_SECRET": "", "OIDC_CLIENT_SECRET_FILE": str(secret)}
    assert from_environ(env).oidc.client_secret == "from-a-file"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"AUTHENTICATOR": "ldap"}, "AUTHENTICATOR='ldap' is not valid; use native (signup with approval) or oidc"),
        ({"OIDC_ISSUER": ""}, "AUTHENTICATOR=oidc needs OIDC_ISSUER"),
        ({"OIDC_ISSUER": "login.example.org"}, "OIDC_ISSUER='login.example.org' is not a URL"),
        (
            {"OIDC_ISSUER": "http://login.example.org"},
            "uses plain http; an issuer must use https (http only for localhost)",
        ),
        ({"OIDC_ISSUER": "https://x.org/?a=b"}, "is not a URL"),
        ({"OIDC_INTERNAL_URL": "keycloak:8080"}, "OIDC_INTERNAL_URL='keycloak:8080' is not a URL"),
        ({"OIDC_CLIENT_ID": " "}, "AUTHENTICATOR=oidc needs OIDC_CLIENT_ID"),
        ({"OIDC_CLIENT_SECRET": ""}, "needs OIDC_CLIENT_SECRET or OIDC_CLIENT_SECRET_FILE"),
        ({"OIDC_CLIENT_SECRET_FILE": "/no/such/file"}, "OIDC_CLIENT_SECRET and OIDC_CLIENT_SECRET_FILE are both set"),
        (
            {"OIDC_CLIENT_SECRET": "", "OIDC_CLIENT_SECRET_FILE": "/no/such/file"},
            "OIDC_CLIENT_SECRET_FILE=/no/such/file: cannot read it",
        ),
        (
            {"OIDC_ALLOWED_GROUPS": ""},
            "needs to know who gets in: set OIDC_ALLOWED_GROUPS, OIDC_ALLOWED_USERS, or OIDC_ALLOW_ALL=1",
        ),
        ({"OIDC_ALLOW_ALL": "maybe"}, "OIDC_ALLOW_ALL='maybe' is not valid; use 1 or 0"),
        ({"OIDC_SCOPES": "profile email"}, "lacks openid"),
        ({"OIDC_CLAIMS_FROM": "token"}, "OIDC_CLAIMS_FROM='token' is not valid; use userinfo or id_token"),
        ({"OIDC_GROUP_MAP": "platform"}, "OIDC_GROUP_MAP: 'platform' is not provider-group=built-in-group"),
        (
            {"OIDC_GROUP_MAP": "platform=root"},
            "'root' is not a built-in group; use one of docker-sock, docker-privileged",
        ),
        ({"OIDC_START_WAIT": "-1"}, "OIDC_START_WAIT='-1' is not a number of seconds"),
        ({"OIDC_ADMIN_USERS": "ada, two words"}, "OIDC_ADMIN_USERS: 'two words' is not a valid username"),
        ({"OIDC_ALLOWED_USERS": "a/b"}, "OIDC_ALLOWED_USERS: 'a/b' is not a valid username"),
        ({"OIDC_RECHECK_SECONDS": "soon"}, "OIDC_RECHECK_SECONDS='soon' is not a number of seconds"),
    ],
)
def test_bad_oidc_settings_are_one_line_naming_the_variable(change, message):
    with pytest.raises(ConfigError) as caught:
        from_environ({**BASE, **change})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_plain_http_is_allowed_to_loopback_only():
    for issuer in ("http://localhost:9000", "http://idp.localhost:9000", "http://127.0.0.1:9000"):
        assert parse_oidc({**BASE, "OIDC_ISSUER": issuer}).issuer == issuer
    assert parse_oidc(
        {**BASE, "OIDC_INTERNAL_URL": "http://keycloak:8080/realms/team"}
    ).internal_url  # inside the stack


# -- discovery ------------------------------------------------------------------------------------------------
CONFIG = parse_oidc({**BASE, "OIDC_INTERNAL_URL": "http://keycloak:8080/realms/team/"})
DOCUMENT = {
    "issuer": "https://login.example.org/realms/team",
    "authorization_endpoint": "https://login.example.org/realms/team/protocol/openid-connect/auth",
    "token_endpoint": "https://login.example.org/realms/team/protocol/openid-connect/token",
    "userinfo_endpoint": "https://login.example.org/realms/team/protocol/openid-connect/userinfo",
    "end_session_endpoint": "https://login.example.org/realms/team/protocol/openid-connect/logout",
}


def test_the_browser_keeps_the_issuers_address_and_the_hub_calls_the_internal_one():
    found = parse_discovery(DOCUMENT, CONFIG)
    assert found.authorization == DOCUMENT["authorization_endpoint"]
    assert found.end_session == DOCUMENT["end_session_endpoint"]
    assert found.token == "http://keycloak:8080/realms/team/protocol/openid-connect/token"
    assert found.userinfo == "http://keycloak:8080/realms/team/protocol/openid-connect/userinfo"
    # a provider that names its endpoints after the address it was asked at (oidc-provider; Keycloak without a hostname)
    asked_inside = {
        key: value.replace("https://login.example.org/realms/team", "http://keycloak:8080/realms/team")
        for key, value in DOCUMENT.items()
        if key != "issuer"
    }
    assert parse_discovery({**asked_inside, "issuer": DOCUMENT["issuer"]}, CONFIG) == found
    # an endpoint on another host (Entra's userinfo on graph.microsoft.com) is left where it is
    elsewhere = parse_discovery({**DOCUMENT, "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo"}, CONFIG)
    assert elsewhere.userinfo == "https://graph.microsoft.com/oidc/userinfo"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {**DOCUMENT, "issuer": "https://evil.example.org"},
            "does not match the issuer the provider names, 'https://evil.example.org'",
        ),
        ({k: v for k, v in DOCUMENT.items() if k != "token_endpoint"}, "the discovery document has no token_endpoint"),
        (
            {k: v for k, v in DOCUMENT.items() if k != "userinfo_endpoint"},
            "userinfo_endpoint (or set OIDC_CLAIMS_FROM=id_token)",
        ),
        (["not", "an", "object"], "is not a JSON object"),
    ],
)
def test_a_wrong_discovery_document_is_refused(document, message):
    with pytest.raises(OIDCError) as caught:
        parse_discovery(document, CONFIG)
    assert message in str(caught.value)


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_discovery_waits_for_an_issuer_that_is_not_up_yet_then_answers():
    clock, asked = Clock(), []

    def fetch(url, timeout):
        asked.append(url)
        if len(asked) < 3:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        return DOCUMENT

    found = discover(CONFIG, fetch=fetch, say=lambda message: None, clock=clock, sleep=clock.sleep)
    assert (
        asked == ["http://keycloak:8080/realms/team/.well-known/openid-configuration"] * 3
    )  # asked where the hub reaches it
    assert found.issuer == DOCUMENT["issuer"] and clock.now < CONFIG.start_wait


def test_discovery_gives_up_after_the_wait_with_one_line():
    clock = Clock()

    def fetch(url, timeout):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    with pytest.raises(OIDCError) as caught:
        discover(CONFIG, fetch=fetch, say=lambda message: None, clock=clock, sleep=clock.sleep)
    assert str(caught.value).startswith(
        "OIDC_INTERNAL_URL: the issuer does not answer at http://keycloak:8080/realms/team/"
    )
    assert "after 30 s" in str(caught.value) and "\n" not in str(caught.value)
    assert 30 <= clock.now < 33


def test_an_issuer_that_answers_wrongly_fails_at_once():
    clock = Clock()

    def fetch(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    with pytest.raises(OIDCError) as caught:
        discover(CONFIG, fetch=fetch, say=lambda message: None, clock=clock, sleep=clock.sleep)
    assert "answered 404 Not Found; check the issuer URL" in str(caught.value) and clock.now == 0


# -- who gets in, and into which groups --------------------------------------------------------------------------
def test_a_provider_group_named_like_a_builtin_group_grants_nothing():
    assert hub_groups({"team", "docker-sock", "docker-privileged"}, (), set()) == {"team"}


def test_without_a_map_the_admins_builtin_memberships_are_kept():
    assert hub_groups({"team"}, (), {"docker-sock", "old-provider-group"}) == {"team", "docker-sock"}


def test_with_a_map_the_mapped_builtin_groups_follow_the_provider_both_ways_and_the_others_stay():
    mapping = (("platform", "docker-sock"),)
    assert hub_groups({"team", "platform"}, mapping, set()) == {"team", "platform", "docker-sock"}
    assert hub_groups({"team"}, mapping, {"docker-sock"}) == {"team"}  # removed at the provider: removed here
    # an admin's docker-privileged, which no provider group maps onto, is the admin's to take away
    assert hub_groups({"team"}, mapping, {"docker-privileged"}) == {"team", "docker-privileged"}


@pytest.mark.parametrize(
    ("claims", "claim", "expected"),
    [
        ({"groups": ["a", "b"]}, "groups", {"a", "b"}),
        ({"groups": "a"}, "groups", {"a"}),
        ({}, "groups", set()),
        ({"realm_access": {"roles": ["x"]}}, "realm_access.roles", {"x"}),
        ({"groups": {"not": "a list"}}, "groups", set()),
    ],
)
def test_the_groups_claim(claims, claim, expected):
    assert groups_from_claims(claims, claim) == expected


def test_the_refusal_says_who_signed_in_and_who_gets_in():
    message = refusal_message("mallory", CONFIG.who_gets_in)
    assert "as mallory" in message and "members of data-science" in message


def test_rp_initiated_logout_names_the_client_and_where_to_return():
    url = logout_url("https://idp/logout", "hub", "https://hub.example.org/")
    assert url == "https://idp/logout?client_id=hub&post_logout_redirect_uri=https%3A%2F%2Fhub.example.org%2F"
    assert logout_url("https://idp/logout?x=1", "hub", "https://h/").startswith("https://idp/logout?x=1&client_id=hub")


def test_the_auth_state_key_is_made_once_and_kept_private(tmp_path):
    key = stored_key(tmp_path / "key")
    assert len(bytes.fromhex(key)) == 32 and stored_key(tmp_path / "key") == key
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600


# -- the authenticator's decisions, on oauthenticator's own code paths ------------------------------------------
def authenticator(**config):
    from hub_ext.authenticators.oidc import GROUPS_KEY, HubforgeOIDCAuthenticator

    made = HubforgeOIDCAuthenticator(manage_groups=True, auth_state_groups_key=GROUPS_KEY, **config)
    made.db = None  # no hub database: no one has groups yet
    return made


def test_membership_in_the_allowed_groups_is_what_lets_a_user_in():
    auth = authenticator(allowed_groups={"team"}, admin_groups={"admins"})

    async def model(groups):
        state = {"oauth_user": {"preferred_username": "ada", "groups": groups}}
        made = await auth.update_auth_model({"name": "ada", "admin": None, "auth_state": state})
        made = await auth._apply_managed_groups(made)
        return made, await auth.check_allowed("ada", made)

    member, allowed = asyncio.run(model(["team"]))
    assert allowed and member["groups"] == ["team"] and not member["admin"]
    admin, allowed = asyncio.run(model(["admins", "docker-sock"]))
    assert allowed and admin["admin"] and admin["groups"] == ["admins"]  # the provider's docker-sock is not ours
    outsider, allowed = asyncio.run(model(["contractors"]))
    assert not allowed


# -- who is who: the provider's `sub` binds a hub user, not the username claim ----------------------------------
class Provider:
    """Stands in for the provider's side of the code flow: the claims its userinfo endpoint would answer with. The
    rest -- oauthenticator's auth model, the groups, and hubforge's decisions -- runs as it does in the hub."""

    def __init__(self, claims=None, failure=None):
        self.claims, self.failure = claims, failure


def signing_in(provider: Provider, db, **config):
    from hub_ext.authenticators.oidc import GROUPS_KEY, HubforgeOIDCAuthenticator

    class Signing(HubforgeOIDCAuthenticator):
        def build_access_tokens_request_params(self, handler, data=None):
            return {}

        async def get_token_info(self, handler, params):
            return {"access_token": "token", "token_type": "Bearer"}

        async def token_to_user(self, token_info):
            if provider.failure:
                raise provider.failure
            return dict(provider.claims)

    made = Signing(
        manage_groups=True,
        auth_state_groups_key=GROUPS_KEY,
        enable_auth_state=True,
        username_claim="preferred_username",
        **config,
    )
    made.db = db
    return made


class Handler:
    """What the hub's request handler gives the authenticator: its user lookup and the proxy. `stopped` names the
    users whose servers were stopped (their User.stop was called)."""

    def __init__(self, users=None):
        self.users, self.stopped = users or {}, []
        self.proxy = type("Proxy", (), {"delete_user": staticmethod(lambda user, server_name: asyncio.sleep(0))})()

    def find_user(self, name):
        return self.users.get(name)


def hub_user(handler: Handler, name: str, server) -> object:
    """A hub user with one server, whose stop the handler records."""

    class User:
        def __init__(self):
            self.name, self.spawners = name, {"": server}

        async def stop(self, server_name):
            handler.stopped.append(self.name)

    return User()


@pytest.fixture
def hub_db():
    import secrets as _secrets

    from jupyterhub import orm
    from jupyterhub.crypto import CryptKeeper

    CryptKeeper.instance().keys = [_secrets.token_bytes(32)]
    return orm.new_session_factory("sqlite:///:memory:")()


def bind(db, name, sub, admin=False, groups=()):
    from jupyterhub import orm
    from jupyterhub.crypto import encrypt

    user = orm.User(name=name, admin=admin)
    db.add(user)
    for group in groups:
        found = db.query(orm.Group).filter_by(name=group).first() or orm.Group(name=group)
        user.groups.append(found)
    if sub:

        async def sealed():
            return await encrypt({"oauth_user": {"sub": sub, "preferred_username": name}})

        user.encrypted_auth_state = asyncio.run(sealed())
    db.commit()
    return user


def test_a_name_taken_over_at_the_provider_does_not_get_the_hub_user_or_stop_their_servers(hub_db):
    bind(hub_db, "bob", "sub-bob", groups=["docker-sock"])
    server = type("Spawner", (), {"active": True, "pending": None})()
    handler = Handler()
    handler.users["bob"] = hub_user(handler, "bob", server)
    taker = Provider({"sub": "sub-alice", "preferred_username": "bob", "groups": ["team"]})
    auth = signing_in(taker, hub_db, allowed_groups={"team"})
    assert asyncio.run(auth.get_authenticated_user(handler, None)) is None
    assert "belongs to another account" in handler.hubforge_refusal
    assert handler.stopped == []
    outsider = signing_in(
        Provider({"sub": "sub-mallory", "preferred_username": "bob", "groups": []}), hub_db, allowed_groups={"team"}
    )
    assert asyncio.run(outsider.get_authenticated_user(handler, None)) is None
    assert handler.stopped == []  # a refused stranger who claims bob's name does not stop bob's server
    bob = signing_in(
        Provider({"sub": "sub-bob", "preferred_username": "bob", "groups": []}), hub_db, allowed_groups={"team"}
    )
    assert asyncio.run(bob.get_authenticated_user(handler, None)) is None
    assert handler.stopped == ["bob"]  # bob himself, out of the group: his server stops


def test_the_same_account_keeps_its_builtin_groups_and_a_stale_admin_flag_goes(hub_db):
    bind(hub_db, "admin", "", admin=True)  # the native admin of a hub that switched to OIDC
    bind(hub_db, "ada", "sub-ada", groups=["docker-sock"])
    auth = signing_in(
        Provider({"sub": "sub-admin", "preferred_username": "admin", "groups": ["team"]}),
        hub_db,
        allowed_groups={"team"},
    )
    model = asyncio.run(auth.get_authenticated_user(Handler(), None))
    assert model["name"] == "admin" and model["admin"] is False
    ada = signing_in(
        Provider({"sub": "sub-ada", "preferred_username": "ada", "groups": ["team", "docker-sock"]}),
        hub_db,
        allowed_groups={"team"},
    )
    model = asyncio.run(ada.get_authenticated_user(Handler(), None))
    assert model["groups"] == ["docker-sock", "team"]  # kept from the hub, not taken from the provider's group


class Stored:
    """A hub user as refresh_user sees it: a name and the auth state of its last sign-in."""

    def __init__(self, name, sub):
        self.name, self.state = (
            name,
            {"oauth_user": {"sub": sub}, "token_response": {"access_token": "t", "token_type": "Bearer"}},
        )

    async def get_auth_state(self):
        return self.state


def test_a_recheck_signs_in_again_when_the_provider_now_names_another_account_or_is_down(hub_db):
    from tornado.httpclient import HTTPClientError

    bind(hub_db, "alice", "sub-alice")
    bind(hub_db, "bob", "sub-bob", groups=["docker-sock"])
    renamed = signing_in(
        Provider({"sub": "sub-alice", "preferred_username": "bob", "groups": ["team"]}), hub_db, allowed_groups={"team"}
    )
    assert asyncio.run(renamed.refresh_user(Stored("alice", "sub-alice"), Handler())) is False  # never bob's groups
    same = signing_in(
        Provider({"sub": "sub-alice", "preferred_username": "alice", "groups": ["team"]}),
        hub_db,
        allowed_groups={"team"},
    )
    assert asyncio.run(same.refresh_user(Stored("alice", "sub-alice"), Handler()))["groups"] == ["team"]
    down = signing_in(Provider(failure=HTTPClientError(599, "connection refused")), hub_db, allowed_groups={"team"})
    assert asyncio.run(down.refresh_user(Stored("alice", "sub-alice"), Handler())) is True  # unchanged, no 500


# -- the allow-lists decide at every login and recheck, for users old and new --------------------------------------
def allowed(auth, name: str, groups: list[str]) -> bool:
    """oauthenticator's own check of a sign-in by `name` whose provider groups are `groups`."""

    async def check():
        state = {"oauth_user": {"preferred_username": name, "groups": groups}}
        model = await auth.update_auth_model({"name": name, "admin": None, "auth_state": state})
        return await auth.check_allowed(name, await auth._apply_managed_groups(model))

    return asyncio.run(check())


def test_the_allow_lists_decide_for_users_already_in_the_hub(hub_db):
    from jupyterhub import orm

    bind(hub_db, "dora", "sub-dora")
    bind(hub_db, "bob", "sub-bob")
    before = authenticator(allowed_users={"dora"}, allowed_groups={"team"})
    after = authenticator(allowed_groups={"team"})  # the operator took dora off OIDC_ALLOWED_USERS and restarted
    for auth in (before, after):
        assert auth.allow_existing_users is False
        for user in hub_db.query(orm.User):  # what JupyterHub does at every start, for every user in its database
            auth.add_user(user)
    assert allowed(before, "dora", ["guests"]) and not allowed(before, "bob", ["guests"])
    assert not allowed(after, "dora", ["guests"])  # a hub user for a while is no reason to stay in
    assert allowed(after, "bob", ["team"]) and not allowed(after, "bob", [])  # the groups decide, each time


class Running:
    """A hub user with a running server, as the hub's user dict holds them; `stop` is what JupyterHub's does."""

    def __init__(self, name):
        self.name, self.state = (
            name,
            {"oauth_user": {"sub": f"sub-{name}"}, "token_response": {"access_token": name, "token_type": "Bearer"}},
        )
        self.spawners = {"": SimpleNamespace(active=True, pending=None)}
        self.saved = None

    async def get_auth_state(self):
        return self.state

    async def save_auth_state(self, state):
        self.saved = state

    async def stop(self, server_name):
        self.spawners[server_name].active = False


def test_the_recheck_stops_the_servers_of_users_who_lost_access_without_a_request_from_them(hub_db):
    from hub_ext.authenticators.oidc import GROUPS_KEY, HubforgeOIDCAuthenticator

    groups = {"ada": ["team"], "finn": ["alumni"], "dora": ["guests"]}

    class AtTheProvider(HubforgeOIDCAuthenticator):
        async def token_to_user(self, token_info):  # the provider's userinfo answer for the token's owner
            name = token_info["access_token"]
            return {"sub": f"sub-{name}", "preferred_username": name, "groups": groups[name]}

    users = {name: Running(name) for name in groups}
    removed = []
    proxy = SimpleNamespace(delete_user=lambda user, server_name: asyncio.sleep(0, removed.append(user.name)))
    auth = AtTheProvider(
        manage_groups=True,
        auth_state_groups_key=GROUPS_KEY,
        enable_auth_state=True,
        username_claim="preferred_username",
        allowed_groups={"team"},
        allowed_users=set(),
    )
    auth.db, auth.hub = hub_db, SimpleNamespace(users=users, proxy=proxy)
    assert asyncio.run(auth.recheck_all()) == ["finn", "dora"]
    assert sorted(removed) == ["dora", "finn"] and users["ada"].spawners[""].active
    assert users["ada"].saved["oauth_user"]["groups"] == ["team"]  # the answer of this recheck is kept


def test_a_claimed_username_obeys_the_signup_rules():
    auth = authenticator(allow_all=True)
    assert auth.normalize_username("Ｚoë.Müller@Example.org") == "zoë.müller@example.org"
    assert auth.validate_username("zoë.müller@example.org")
    assert not auth.validate_username("two words")


@pytest.mark.skipif(os.getuid() == 1000, reason="run as the hub's own uid, a file of one's own is readable by the hub")
def test_the_rendered_stack_mounts_the_secret_file_for_the_hub(tmp_path):
    from hubforge.deploy import StackOptions
    from hubforge.deploy.compose import ComposeStack

    socket_file = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_file))
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)  # root's own: the hub (uid 1000) could not read it
    options = StackOptions(
        project="p", run_dir=tmp_path / "run", https_port=9443, http_port=9080, docker_socket=str(socket_file)
    )
    options.run_dir.mkdir()
    env = "\n".join(
        f"{k}={v}"
        for k, v in {
            **BASE,
            "OIDC_CLIENT_SECRET": "",
            "OIDC_CLIENT_SECRET_FILE": str(secret),
            "ENABLE_GPU_SUPPORT": "0",
        }.items()
    )
    (options.run_dir / ".env").write_text(env + "\n")
    daemon = SimpleNamespace(cpu_count=lambda: 2, containers=lambda labels, all=True: [])
    said = []
    stack = ComposeStack(options, daemon, Path(__file__).resolve().parents[2], say=said.append)
    from hubforge.errors import HubforgeError

    with pytest.raises(HubforgeError) as caught:
        stack.prepare({"hub": "h:1", "gpu-probe": "g:1"}, {"default": "l:1"})
    assert f"OIDC_CLIENT_SECRET_FILE={secret} is not readable by the hub (uid 1000)" in str(caught.value)
    secret.chmod(0o644)
    state = stack.prepare({"hub": "h:1", "gpu-probe": "g:1"}, {"default": "l:1"})
    # readable by the hub, and by everyone: `invoke up` says so in one line, and goes on
    assert [line for line in said if "readable by every user" in line] == [
        f"warning: OIDC_CLIENT_SECRET_FILE={secret} is readable by every user (mode 0644), and the client secret lets "
        f"anyone act as this hub at the provider; make it private: chown 1000 {secret} && chmod 0400 {secret}"
    ]
    rendered = yaml.safe_load((options.run_dir / "compose.yml").read_text())
    hub = rendered["services"]["hub"]
    assert hub["environment"]["OIDC_CLIENT_SECRET_FILE"] == "/run/secrets/oidc_client_secret"
    assert hub["secrets"] == ["oidc_client_secret"] and rendered["secrets"]["oidc_client_secret"]["file"] == str(secret)
    assert "s3cret" not in (options.run_dir / "compose.yml").read_text() + (options.run_dir / "stack.json").read_text()
    assert state["oidc"]["redirect_uri"] == "https://hub.localhost:9443/hub/oauth_callback"
    listener.close()


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o604, True), (0o400, False), (0o640, False)])
def test_a_world_readable_client_secret_file_is_named_in_one_line(tmp_path, mode, warned):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    secret.chmod(mode)
    config = from_environ({**BASE, "OIDC_CLIENT_SECRET": "", "OIDC_CLIENT_SECRET_FILE": str(secret)}).oidc
    assert config.client_secret == "from-a-file"  # used all the same
    if warned:
        assert config.secret_warning == (
            f"OIDC_CLIENT_SECRET_FILE={secret} is readable by every user (mode {mode:04o}), and the client secret lets "
            f"anyone act as this hub at the provider; make it private: chown 1000 {secret} && chmod 0400 {secret}"
        )
    else:
        assert config.secret_warning == ""


def test_in_the_hub_the_warning_names_the_hosts_file():
    """The stack mounts the host's file at SECRET_IN_HUB with the host's mode: the hub says which file to fix."""
    from hub_ext.settings.oidc import SECRET_IN_HUB, parse_oidc

    env = {**BASE, "OIDC_CLIENT_SECRET": "", "OIDC_CLIENT_SECRET_FILE": SECRET_IN_HUB}
    config = parse_oidc(env, read=lambda path: "s3cret", mode=lambda path: 0o444)
    assert config.secret_warning.startswith("the host's OIDC_CLIENT_SECRET_FILE is readable by every user (mode 0444)")
    assert "chown 1000 FILE && chmod 0400 FILE" in config.secret_warning and "\n" not in config.secret_warning
    assert from_environ(BASE).oidc.secret_warning == ""  # OIDC_CLIENT_SECRET in .env: no file to warn about
