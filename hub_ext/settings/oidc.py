"""Sign-in through an OpenID Connect provider: its settings, its discovery document, and who gets in.

Everything here is plain data and pure decisions, so the host (`invoke up`) checks the same settings the hub
does, and unit tests need neither the hub nor a provider. The authenticator that uses them is
hub_ext.authenticators.oidc (it needs oauthenticator, which only the hub image and the dev extra carry).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hub_ext.naming import BUILTIN_GROUPS
from hub_ext.settings.parse import USERNAME, ConfigError, flag

AUTHENTICATORS = ("native", "oidc")
CLAIM_SOURCES = ("userinfo", "id_token")
SECRET_IN_HUB = "/run/secrets/oidc_client_secret"  # where the stack mounts OIDC_CLIENT_SECRET_FILE in the hub
DISCOVERY_PATH = "/.well-known/openid-configuration"


class OIDCError(ConfigError):
    """A bad OIDC setting or an issuer that cannot be used; str() is one line naming the variable."""


@dataclass(frozen=True)
class OIDCConfig:
    """The OIDC_* settings, checked. Each is declared here once, with its default."""

    issuer: str  # OIDC_ISSUER: the URL the browser and the tokens know the provider by
    client_id: str  # OIDC_CLIENT_ID
    client_secret: str = field(default="", repr=False)  # OIDC_CLIENT_SECRET, or the contents of OIDC_CLIENT_SECRET_FILE
    secret_file: str = ""  # OIDC_CLIENT_SECRET_FILE as given (a path on the host; SECRET_IN_HUB inside the hub)
    secret_file_mode: int = 0  # its permission bits, as they were when it was read
    internal_url: str = ""  # OIDC_INTERNAL_URL: where the hub itself reaches the issuer, when that differs
    scopes: tuple[str, ...] = ("openid", "profile", "email")  # OIDC_SCOPES
    username_claim: str = "preferred_username"  # OIDC_USERNAME_CLAIM
    groups_claim: str = "groups"  # OIDC_GROUPS_CLAIM
    claims_from: str = "userinfo"  # OIDC_CLAIMS_FROM: userinfo | id_token
    allowed_groups: frozenset[str] = frozenset()  # OIDC_ALLOWED_GROUPS
    allowed_users: frozenset[str] = frozenset()  # OIDC_ALLOWED_USERS
    allow_all: bool = False  # OIDC_ALLOW_ALL
    admin_groups: frozenset[str] = frozenset()  # OIDC_ADMIN_GROUPS
    admin_users: frozenset[str] = frozenset()  # OIDC_ADMIN_USERS
    group_map: tuple[tuple[str, str], ...] = ()  # OIDC_GROUP_MAP: (provider group, built-in group)
    login_name: str = "OpenID Connect"  # OIDC_LOGIN_NAME: "Sign in with <name>"
    logout_provider: bool = False  # OIDC_LOGOUT_PROVIDER: logging out also ends the provider's session
    start_wait: int = 30  # OIDC_START_WAIT: seconds the hub waits at start for an issuer that does not answer yet
    recheck_seconds: int = (
        300  # OIDC_RECHECK_SECONDS: how often a signed-in user's access is asked again (0: at login only)
    )

    @property
    def who_gets_in(self) -> str:
        if self.allow_all:
            return "everyone the provider authenticates"
        parts = []
        if self.allowed_groups:
            parts.append("members of " + ", ".join(sorted(self.allowed_groups)))
        if self.allowed_users:
            parts.append("the users " + ", ".join(sorted(self.allowed_users)))
        return " and ".join(parts)

    @property
    def secret_warning(self) -> str:
        """One line when OIDC_CLIENT_SECRET_FILE is readable by every user of the machine; empty when it is not."""
        if not self.secret_file or not self.secret_file_mode & stat.S_IROTH:
            return ""
        mounted = self.secret_file == SECRET_IN_HUB  # the hub's view of the host's file: the same mode, another path
        where = "the host's OIDC_CLIENT_SECRET_FILE" if mounted else f"OIDC_CLIENT_SECRET_FILE={self.secret_file}"
        path = "FILE" if mounted else self.secret_file
        return (
            f"{where} is readable by every user (mode {self.secret_file_mode:04o}), and the client secret lets anyone "
            "act "
            f"as this hub at the provider; make it private: chown 1000 {path} && chmod 0400 {path}"
        )


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not raw.isdigit():
        raise OIDCError(f"{name}={raw!r} is not a number of seconds; use a whole number >= 0")
    return int(raw)


def _names(env: Mapping[str, str], name: str) -> frozenset[str]:
    """A comma-separated list (group names keep their case and may contain spaces and slashes: GitLab's paths)."""
    return frozenset(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _users(env: Mapping[str, str], name: str) -> frozenset[str]:
    """A comma-separated list of usernames, lower-cased as the hub stores them."""
    users = frozenset(n.lower() for n in _names(env, name))
    for user in sorted(users):
        if not USERNAME.match(user):
            raise OIDCError(f"{name}: {user!r} is not a valid username; use 1-64 characters without spaces or '/'")
    return users


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_url(name: str, raw: str, https_only: bool) -> str:
    """An http(s) URL without query or fragment, without its trailing slash. Plain http only to loopback names
    when `https_only`: tokens and the client secret cross this connection."""
    value = raw.strip().rstrip("/")
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
        raise OIDCError(f"{name}={raw!r} is not a URL; use e.g. https://login.example.org/realms/team")
    if https_only and parsed.scheme == "http" and not _loopback(parsed.hostname):
        raise OIDCError(f"{name}={raw!r} uses plain http; an issuer must use https (http only for localhost)")
    return value


def parse_group_map(raw: str) -> tuple[tuple[str, str], ...]:
    """OIDC_GROUP_MAP: `provider group=built-in group` pairs separated by commas, e.g. `platform-team=docker-sock`."""
    pairs = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        source, sep, target = (s.strip() for s in item.rpartition("="))
        if not sep or not source or not target:
            raise OIDCError(
                f"OIDC_GROUP_MAP: {item!r} is not provider-group=built-in-group; use e.g. platform-team=docker-sock"
            )
        if target not in BUILTIN_GROUPS:
            raise OIDCError(
                f"OIDC_GROUP_MAP: {target!r} is not a built-in group; use one of {', '.join(BUILTIN_GROUPS)}"
            )
        pairs.append((source, target))
    return tuple(sorted(set(pairs)))


def parse_oidc(
    env: Mapping[str, str],
    read: Callable[[str], str] = lambda path: Path(path).read_text(),
    mode: Callable[[str], int] = lambda path: stat.S_IMODE(os.stat(path).st_mode),
) -> OIDCConfig:
    """The OIDC_* settings from `env` (AUTHENTICATOR=oidc), checked; raises OIDCError with one line. The secret file's
    permission bits (`mode`) are kept for `OIDCConfig.secret_warning`."""
    if not env.get("OIDC_ISSUER", "").strip():
        raise OIDCError(
            "AUTHENTICATOR=oidc needs OIDC_ISSUER, the provider's issuer URL (e.g. https://login.example.org/realms/team)"
        )
    issuer = parse_url("OIDC_ISSUER", env["OIDC_ISSUER"], https_only=True)
    internal = (
        parse_url("OIDC_INTERNAL_URL", env["OIDC_INTERNAL_URL"], https_only=False)
        if env.get("OIDC_INTERNAL_URL", "").strip()
        else ""
    )
    client_id = env.get("OIDC_CLIENT_ID", "").strip()
    if not client_id:
        raise OIDCError(
            "AUTHENTICATOR=oidc needs OIDC_CLIENT_ID, the client (application) id registered at the provider"
        )
    secret, secret_file = env.get("OIDC_CLIENT_SECRET", "").strip(), env.get("OIDC_CLIENT_SECRET_FILE", "").strip()
    secret_mode = 0
    if secret and secret_file:
        raise OIDCError("OIDC_CLIENT_SECRET and OIDC_CLIENT_SECRET_FILE are both set; keep one")
    if secret_file:
        try:
            secret, secret_mode = read(secret_file).strip(), mode(secret_file)
        except OSError as exc:
            raise OIDCError(f"OIDC_CLIENT_SECRET_FILE={secret_file}: cannot read it ({exc.strerror or exc})") from None
        if not secret:
            raise OIDCError(f"OIDC_CLIENT_SECRET_FILE={secret_file} is empty; put the client secret in it")
    if not secret:
        raise OIDCError(
            "AUTHENTICATOR=oidc needs OIDC_CLIENT_SECRET or OIDC_CLIENT_SECRET_FILE (the client secret from the "
            "provider)"
        )
    scopes = tuple(dict.fromkeys(env.get("OIDC_SCOPES", "").replace(",", " ").split())) or OIDCConfig.scopes
    if "openid" not in scopes:
        raise OIDCError(
            f"OIDC_SCOPES={env['OIDC_SCOPES']!r} lacks openid; OpenID Connect needs it, e.g. openid profile email"
        )
    claims_from = env.get("OIDC_CLAIMS_FROM", "").strip() or "userinfo"
    if claims_from not in CLAIM_SOURCES:
        raise OIDCError(f"OIDC_CLAIMS_FROM={claims_from!r} is not valid; use userinfo or id_token")
    config = OIDCConfig(
        issuer=issuer,
        client_id=client_id,
        client_secret=secret,
        secret_file=secret_file,
        secret_file_mode=secret_mode,
        internal_url=internal,
        scopes=scopes,
        username_claim=env.get("OIDC_USERNAME_CLAIM", "").strip() or OIDCConfig.username_claim,
        groups_claim=env.get("OIDC_GROUPS_CLAIM", "").strip() or OIDCConfig.groups_claim,
        claims_from=claims_from,
        allowed_groups=_names(env, "OIDC_ALLOWED_GROUPS"),
        allowed_users=_users(env, "OIDC_ALLOWED_USERS"),
        allow_all=flag(env, "OIDC_ALLOW_ALL", False),
        admin_groups=_names(env, "OIDC_ADMIN_GROUPS"),
        admin_users=_users(env, "OIDC_ADMIN_USERS"),
        group_map=parse_group_map(env.get("OIDC_GROUP_MAP", "")),
        login_name=env.get("OIDC_LOGIN_NAME", "").strip() or OIDCConfig.login_name,
        logout_provider=flag(env, "OIDC_LOGOUT_PROVIDER", False),
        start_wait=_seconds(env, "OIDC_START_WAIT", 30),
        recheck_seconds=_seconds(env, "OIDC_RECHECK_SECONDS", 300),
    )
    if not (config.allow_all or config.allowed_groups or config.allowed_users):
        raise OIDCError(
            "AUTHENTICATOR=oidc needs to know who gets in: set OIDC_ALLOWED_GROUPS, OIDC_ALLOWED_USERS, "
            "or OIDC_ALLOW_ALL=1 (everyone the provider authenticates)"
        )
    return config


# -- discovery ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoints:
    """What the hub uses from the discovery document. The browser's endpoints keep the issuer's address; the
    hub's own (token, userinfo) go to OIDC_INTERNAL_URL when that is set."""

    issuer: str
    authorization: str
    token: str
    userinfo: str
    end_session: str = ""


def rebase(url: str, old: str, new: str) -> str:
    """`url` under `old`, moved under `new` (no change when either is empty or `url` is elsewhere)."""
    if old and new and url.startswith(old):
        return new + url[len(old) :]
    return url


def parse_discovery(document: object, config: OIDCConfig) -> Endpoints:
    """The endpoints of a discovery document, checked against the configured issuer (OpenID Connect Discovery 1.0,
    section 4.3: the issuer in the document must be the one asked for)."""
    if not isinstance(document, dict):
        raise OIDCError(f"OIDC_ISSUER={config.issuer}: the discovery document is not a JSON object")
    found = str(document.get("issuer", "")).rstrip("/")
    if found != config.issuer:
        raise OIDCError(
            f"OIDC_ISSUER={config.issuer} does not match the issuer the provider names, {found or 'none'!r}; "
            "set OIDC_ISSUER to exactly that"
        )
    missing = [key for key in ("authorization_endpoint", "token_endpoint") if not document.get(key)]
    if config.claims_from == "userinfo" and not document.get("userinfo_endpoint"):
        missing.append("userinfo_endpoint (or set OIDC_CLAIMS_FROM=id_token)")
    if missing:
        raise OIDCError(f"OIDC_ISSUER={config.issuer}: the discovery document has no {', '.join(missing)}")
    # A provider may name its endpoints after the issuer (Keycloak with its hostname set) or after the address it was
    # asked at (oidc-provider, Keycloak without one, Casdoor without `origin`): the browser's go to the issuer's
    # address, and the hub's own to the internal one, whichever the document used.
    issuer, inside = config.issuer, config.internal_url
    return Endpoints(
        issuer=found,
        authorization=rebase(str(document["authorization_endpoint"]), inside, issuer),
        token=rebase(str(document["token_endpoint"]), issuer, inside),
        userinfo=rebase(str(document.get("userinfo_endpoint") or ""), issuer, inside),
        end_session=rebase(str(document.get("end_session_endpoint") or ""), inside, issuer),
    )


def discovery_url(config: OIDCConfig) -> str:
    return (config.internal_url or config.issuer) + DISCOVERY_PATH


def fetch_json(url: str, timeout: float) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 -- an http(s) URL, checked above
        return json.loads(answer.read(1_000_000))


def discover(
    config: OIDCConfig,
    fetch: Callable[[str, float], object] = fetch_json,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Endpoints:
    """The provider's endpoints, from its discovery document. An issuer that does not answer (yet) is asked again
    for up to `config.start_wait` seconds (a provider in the same stack may start after the hub); an answer that
    is wrong fails at once. Raises OIDCError with one line."""
    url = discovery_url(config)
    deadline = clock() + config.start_wait
    while True:
        try:
            document = fetch(url, 10.0)
        except urllib.error.HTTPError as exc:
            raise OIDCError(
                f"OIDC_ISSUER={config.issuer}: {url} answered {exc.code} {exc.reason}; check the issuer URL"
            ) from None
        except ValueError:
            raise OIDCError(f"OIDC_ISSUER={config.issuer}: {url} did not answer JSON; check the issuer URL") from None
        except OSError as exc:  # refused, no such name, timed out: perhaps not up yet
            reason = getattr(exc, "reason", None) or exc
            if clock() >= deadline:
                where = "OIDC_INTERNAL_URL" if config.internal_url else "OIDC_ISSUER"
                raise OIDCError(
                    f"{where}: the issuer does not answer at {url} ({reason}) after {config.start_wait} s; "
                    f"check {where} and that the provider runs (OIDC_START_WAIT waits longer)"
                ) from None
            say(f"waiting for the issuer at {url} ({reason})")
            sleep(min(2.0, max(0.1, deadline - clock())))
            continue
        return parse_discovery(document, config)


# -- who gets in, and into which groups -------------------------------------------------------------------------
def hub_groups(provider_groups: set[str], group_map: tuple[tuple[str, str], ...], current: set[str]) -> set[str]:
    """The hub groups of a user who signed in, from the provider's groups.

    - Every provider group becomes a hub group of the same name, except the names of hubforge's built-in groups:
      a provider group that happens to be called `docker-sock` must not hand out the host's Docker socket.
    - A built-in group that OIDC_GROUP_MAP maps onto follows the provider: a user is in it exactly while they are in
      a provider group mapped onto it.
    - Every other built-in group stays the admins' to manage in the hub: its memberships in `current` are kept.
    """
    builtin = set(BUILTIN_GROUPS)
    mapped = {target for _, target in group_map}
    groups = {g for g in provider_groups if g not in builtin}
    groups |= {target for source, target in group_map if source in provider_groups}
    groups |= current & (builtin - mapped)
    return groups


def groups_from_claims(claims: Mapping[str, object], claim: str) -> set[str]:
    """The groups claim as a set of names (absent: none). A nested claim is named with dots: `realm_access.roles`."""
    value: object = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if isinstance(value, (list, tuple, set)):
        return {str(v) for v in value}
    return set()


def refusal_message(username: str, who_gets_in: str) -> str:
    """What someone the provider signed in, but this hub does not let in, reads on the refusal page."""
    return (
        f"You signed in at the identity provider as {username}, but this hub lets in only {who_gets_in}. "
        "Ask the hub's administrator for access; once it is given, sign in again."
    )


def logout_url(end_session: str, client_id: str, return_to: str) -> str:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): the provider ends its session, then sends the
    browser back to `return_to`, which must be registered at the provider as a post-logout redirect URI."""
    query = urllib.parse.urlencode({"client_id": client_id, "post_logout_redirect_uri": return_to})
    return f"{end_session}{'&' if '?' in end_session else '?'}{query}"


def stored_key(path: Path) -> str:
    """A 32-byte key, hex, kept in `path` (the hub's data volume) and made there on first use, private to the hub.
    It encrypts the stored tokens (JupyterHub's auth state) that let the hub ask the provider again later."""
    try:
        key = path.read_text().strip()
        if len(key) == 64:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    staged = path.with_suffix(".tmp")
    with os.fdopen(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(key + "\n")
    staged.replace(path)
    return key
