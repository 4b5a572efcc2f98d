"""hubforge's JupyterHub configuration: the one place that reads environment variables.

Values are parsed and checked by hub_ext.settings.hub (one-line errors) and then assigned to traits.
Add your own settings in config.d/*.py next to the stack's compose file; they load last.
"""

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import nativeauthenticator
from jupyterhub.utils import subdomain_hook_idna
from tornado.httpclient import AsyncHTTPClient

from hub_ext import monitoring
from hub_ext.auth import throttle
from hub_ext.auth.people import DUE
from hub_ext.authenticators.native import TEMPLATES
from hub_ext.hub import database, passwordgate, process, proxy, publichost
from hub_ext.hub.logo import LogoError, materialize
from hub_ext.hub.tls import ensure_self_signed
from hub_ext.labs.runtime import log_options
from hub_ext.naming import BUILTIN_GROUPS, CANARY_USER
from hub_ext.settings.hub import (
    ENGINES,
    SETTINGS,
    ConfigError,
    certificate_names,
    from_environ,
    hub_host,
)
from hub_ext.settings.oidc import stored_key
from hub_ext.web import metrics

c = get_config()  # noqa: F821 -- provided by JupyterHub's config loader
env = os.environ


def refuse(message: str) -> None:
    """Stop the hub with one line; `invoke up` and `docker logs` show it as is."""
    print(f"hubforge: configuration error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


try:
    hub = from_environ(env)
    lab_images = json.loads(env.get("HUBFORGE_LAB_IMAGES") or "{}")
    gpu_probe = json.loads(env["HUBFORGE_GPU_PROBE"]) if env.get("HUBFORGE_GPU_PROBE") else None
except ConfigError as exc:
    refuse(str(exc))
except json.JSONDecodeError as exc:
    refuse(f"HUBFORGE_LAB_IMAGES or HUBFORGE_GPU_PROBE is not JSON ({exc}); start the stack with `invoke up`")

# Every setting of the table that sets a trait sets it here (hub_ext.settings.hub.SETTINGS: LAB_PIDS_LIMIT ->
# HubforgeSpawner.pids_limit, ...); the classes that do not run ignore theirs. The rest are assigned below.
for setting in SETTINGS:
    if setting.trait:
        section, trait = setting.trait.split(".")
        setattr(getattr(c, section), trait, getattr(hub, setting.field))

HOME = Path("/srv/jupyterhub")
DATA = HOME / "data"  # volume: sqlite database and cookie secret
CERTS = HOME / "certs"  # volume: TLS certificate and key
HTTPS_PORT, REDIRECT_PORT = 8443, 8080  # inside the container; `invoke up --port/--http-port` publish them

# -- hub, proxy and TLS ------------------------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{DATA}/jupyterhub.sqlite"
database.install()  # write-ahead log: commits on the event loop no longer wait for the disk
process.tune_garbage_collection()  # short, rare full collections: no pauses of the event loop with many users
c.JupyterHub.cookie_secret_file = str(DATA / "jupyterhub_cookie_secret")
c.JupyterHub.base_url = hub.base_url
c.JupyterHub.ip = "0.0.0.0"  # ip and port, not bind_url: JupyterHub rebuilds bind_url from them and base_url
c.JupyterHub.port = HTTPS_PORT
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_url = "http://hub:8081"  # the hub's service name on the stack network
cert = Path(hub.ssl_cert or CERTS / "tls.crt")
key = Path(hub.ssl_key or CERTS / "tls.key")
if not hub.ssl_cert:
    ensure_self_signed(cert, key, certificate_names(hub))  # the labs' wildcard included; remade if it lacks one
# Each lab on its own origin, https://<user>.<hub host>/: the hub's cookies never reach a lab, and a lab's
# JavaScript cannot act on the hub with its visitor's session. LAB_SUBDOMAINS=0 keeps labs on the hub's origin.
PUBLIC_PORT = env.get("HUBFORGE_HTTPS_PORT", "443")  # as published by `invoke up --port`
PUBLIC_ORIGIN = f"https://{hub_host(hub)}" + ("" if PUBLIC_PORT == "443" else f":{PUBLIC_PORT}")
if hub.lab_subdomains:
    c.JupyterHub.subdomain_host = PUBLIC_ORIGIN
    # JupyterHub 5's "idna" rule, given as the function: unicode, dots and long names all become one DNS label.
    # (The string "idna" reaches the services' code unresolved in JupyterHub 5.5.4: "'str' object is not callable".)
    c.JupyterHub.subdomain_hook = subdomain_hook_idna
    # The hub's login cookie as `__Host-jupyterhub-hub-login`: a browser refuses a `__Host-` cookie that names a Domain,
    # so no lab page (not even its 404, whose headers the lab's owner controls) can plant its owner's login cookie on
    # the hub for an admin who visits it (login fixation). JupyterHub recommends it exactly with per-user domains.
    c.JupyterHub.cookie_host_prefix_enabled = True
    # The cookies name the public host: a browser that opened the hub under another name (127.0.0.1) is sent there.
    publichost.install(PUBLIC_ORIGIN, hub.base_url)
if hub.authenticator == "native":
    # An account an admin made or reset chooses its own password before anything else opens.
    passwordgate.install(hub.base_url, DUE.is_due)
c.JupyterHub.template_vars = {
    "hubforge_shared_origin": not hub.lab_subdomains,  # the admin page says so
    "hubforge_native": hub.authenticator == "native",  # signup and approval pages exist
}
c.JupyterHub.ssl_cert = str(cert)
metrics.watch_certificate(cert)  # hubforge_tls_certificate_expiry_timestamp_seconds, for the expiry alert
c.JupyterHub.ssl_key = str(key)
# The proxy terminates TLS and answers plain HTTP on REDIRECT_PORT with a redirect to HTTPS only.
PROXY_API = env.get("HUBFORGE_PROXY_API", "")
if PROXY_API:
    # In a container of its own (images/proxy): it outlives the hub, and the hub finds its routes again at start. On
    # Compose the hub shares its network namespace; on Swarm it is a service on the stack network, whose address is
    # the one the hub trusts with a client's X-Forwarded-For. The token is CONFIGPROXY_AUTH_TOKEN, shared by both.
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = PROXY_API
    try:  # the certificate exists by now (made above), which the proxy waits for
        proxy.wait_for_api(
            PROXY_API, 90, say=lambda message: print(f"hubforge: {message}", file=sys.stderr, flush=True)
        )
    except TimeoutError as exc:
        refuse(str(exc))
    if env.get("HUBFORGE_PROXY_SERVICE"):
        throttle.PROXY.name = urlsplit(PROXY_API).hostname or ""
c.ConfigurableHTTPProxy.command = [
    "configurable-http-proxy",
    "--redirect-port",
    str(REDIRECT_PORT),
    "--redirect-to",
    env.get("HUBFORGE_HTTPS_PORT", "443"),
]
c.ConfigurableHTTPProxy.pid_file = "/tmp/jupyterhub-proxy.pid"  # the root filesystem is read-only
# Browsers only ever reach the hub over HTTPS: say so, and keep cookies off plain HTTP.
c.JupyterHub.tornado_settings = {
    "headers": {
        "Strict-Transport-Security": "max-age=31536000",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "frame-ancestors 'self'",
    },
    "cookie_options": {"secure": True},
    "hubforge_lab_images": list(lab_images),  # the names a group policy may give (hub_ext.web.policies)
}

# -- authentication: NativeAuthenticator (signup with approval), or an OpenID Connect provider ---------------------
# Both register hub_ext's pages and APIs through Authenticator.get_handlers, and share
# hub_ext.authenticators.native.HubforgeAuthMixin:
# one set of username rules, and admins' access to labs (hub_ext.web.labaccess), unless LAB_ADMIN_ACCESS=1.
if hub.authenticator == "oidc":
    from hub_ext.authenticators.oidc import GROUPS_KEY
    from hub_ext.settings.oidc import OIDCError, discover, logout_url

    oidc = hub.oidc
    if oidc.secret_warning:  # used all the same: refusing would stop a running hub over a mode it can name
        print(f"hubforge: warning: {oidc.secret_warning}", file=sys.stderr, flush=True)
    try:  # the issuer must answer now: a hub that cannot sign anyone in stops with one line instead
        endpoints = discover(oidc, say=lambda message: print(f"hubforge: {message}", file=sys.stderr, flush=True))
    except OIDCError as exc:
        refuse(str(exc))
    c.JupyterHub.authenticator_class = "hub_ext.authenticators.oidc.HubforgeOIDCAuthenticator"
    c.JupyterHub.template_paths = [TEMPLATES]  # JupyterHub's login page: one "Sign in with <name>" button
    auth = c.HubforgeOIDCAuthenticator
    auth.login_service = oidc.login_name
    auth.client_id = oidc.client_id
    auth.client_secret = oidc.client_secret  # from .env or OIDC_CLIENT_SECRET_FILE (a secret mounted by the stack)
    auth.authorize_url = endpoints.authorization
    auth.token_url = endpoints.token  # the hub's own calls go to OIDC_INTERNAL_URL when set
    if oidc.claims_from == "id_token":  # oauthenticator takes one or the other, never both
        auth.userdata_from_id_token = True
    else:
        auth.userdata_url = endpoints.userinfo
    auth.scope = list(oidc.scopes)
    auth.username_claim = oidc.username_claim
    if hub.public_host or hub.lab_subdomains:  # else oauthenticator takes it from the request's own host
        auth.oauth_callback_url = f"{PUBLIC_ORIGIN}{hub.base_url}hub/oauth_callback"
    # Who gets in and who is admin come from the provider, at every login and every OIDC_RECHECK_SECONDS after it
    # (with the stored token: auth state, encrypted with a key kept in the hub's data volume).
    auth.manage_groups = True
    auth.auth_state_groups_key = (
        GROUPS_KEY  # hub_ext.settings.oidc.hub_groups: provider groups, never the built-in names
    )
    auth.groups_claim = oidc.groups_claim
    auth.group_map = [list(pair) for pair in oidc.group_map]
    auth.allow_all = oidc.allow_all
    auth.allowed_groups = set(oidc.allowed_groups)
    auth.allowed_users = set(oidc.allowed_users)
    auth.admin_groups = set(oidc.admin_groups)
    auth.admin_users = set(oidc.admin_users)  # JUPYTERHUB_ADMIN is not used: a provider may let anyone pick that name
    auth.who_gets_in = oidc.who_gets_in
    auth.enable_auth_state = True
    auth.auth_refresh_age = oidc.recheck_seconds
    c.CryptKeeper.keys = [stored_key(DATA / "auth-state-key")]
    if oidc.logout_provider and endpoints.end_session:  # RP-initiated logout: the provider's session ends too
        auth.logout_redirect_url = logout_url(endpoints.end_session, oidc.client_id, f"{PUBLIC_ORIGIN}{hub.base_url}")
else:
    # NativeAuthenticator plus hub_ext's pages and APIs (registered through Authenticator.get_handlers).
    c.JupyterHub.authenticator_class = "hub_ext.authenticators.native.HubforgeAuthenticator"
    c.JupyterHub.template_paths = [TEMPLATES, str(Path(nativeauthenticator.__file__).parent / "templates")]
    c.JupyterHub.load_groups = {name: {} for name in BUILTIN_GROUPS}  # created at start if missing
    c.Authenticator.admin_users = {hub.admin}
    c.Authenticator.allow_all = True  # JupyterHub 5 needs it; NativeAuthenticator still enforces approval
    c.NativeAuthenticator.enable_signup = hub.enable_signup
    c.HubforgeAuthenticator.bootstrap_secret_file = str(DATA / "admin-bootstrap-secret")
    c.NativeAuthenticator.minimum_password_length = hub.password_min_length
    c.NativeAuthenticator.check_common_password = True
    # Throttling per account and client address with growing waits, and a budget per address (hub_ext.auth.throttle);
    # NativeAuthenticator's own per-account lock-out, which anyone could aim at the admin, is off.

# -- spawning: one isolated lab container per user ----------------------------------------------------
# The engine (`invoke up --engine`) picks the spawner; both take every setting below (HubforgeSwarmSpawner is a
# HubforgeSpawner whose labs are Swarm services).
ENGINE = env.get("HUBFORGE_ENGINE", "compose")
if ENGINE not in ENGINES:
    refuse(f"HUBFORGE_ENGINE={ENGINE!r} is not an engine; use compose or swarm (start the stack with `invoke up`)")
c.JupyterHub.spawner_class = (
    "hub_ext.spawn.swarm.HubforgeSwarmSpawner" if ENGINE == "swarm" else "hub_ext.spawn.spawner.HubforgeSpawner"
)
if "default" in lab_images:
    c.HubforgeSpawner.image = lab_images["default"]
# Group policies (hub_ext.labs.policy, edited on /hub/policies) decide, per user, which of these a user may pick (the
# spawn page offers a picker when more than one), their limits, GPUs, folders and rights; the settings below are the
# default policy, for users in no group.
c.HubforgeSpawner.lab_images = lab_images
c.HubforgeSpawner.idle_timeout = hub.idle_culler_timeout if hub.idle_culler_enabled else 0
# Each lab on its own network with the hub (named from the stack network, addressed from LAB_SUBNET_POOL);
# the netguard service keeps labs off private and link-local addresses (LAB_ALLOWED_RANGES excepted).
c.HubforgeSpawner.stack_network = env.get("HUBFORGE_NETWORK", "hubforge_net")
c.HubforgeSpawner.notebook_dir = "/home/lab/workspace"
c.HubforgeSpawner.mem_limit = hub.lab_mem_limit
c.HubforgeSpawner.cpu_limit = hub.lab_cpu_limit
c.HubforgeSpawner.log_options = log_options(hub.log_max_size, hub.log_max_files)  # rotated: a lab cannot fill the disk
c.JupyterHub.active_server_limit = hub.active_server_limit  # 0: no limit
c.JupyterHub.concurrent_spawn_limit = hub.concurrent_spawn_limit  # 0: no limit
# Tornado's HTTP client, which the whole hub shares (readiness checks of starting labs, every proxy update,
# broadcast deliveries), runs 10 requests at a time unless told otherwise; JupyterHub switches to pycurl,
# which this image does not carry. With 100 labs that queue is the bottleneck.
AsyncHTTPClient.configure(None, max_clients=512)
c.HubforgeSpawner.project = env.get("HUBFORGE_PROJECT", "hubforge")
c.HubforgeSpawner.hub_image = env.get("HUBFORGE_HUB_IMAGE", "")  # helpers and sandboxes run it
c.HubforgeSwarmSpawner.proxy_service = env.get("HUBFORGE_PROXY_SERVICE", "")  # Swarm: joins labs' networks
c.HubforgeSpawner.volume_prefix = env.get("HUBFORGE_VOLUME_PREFIX", "jupyterlab")
c.HubforgeSpawner.shared_volume = env.get("HUBFORGE_SHARED_VOLUME", "jupyterhub_shared")
if env.get("HUBFORGE_DOCKER_GID"):
    c.HubforgeSpawner.docker_socket_gid = int(env["HUBFORGE_DOCKER_GID"])
c.HubforgeSpawner.gpu_probe = gpu_probe
c.HubforgeSpawner.lab_services = hub.lab_services
c.Spawner.default_url = "/lab"
# Labs outlive the hub: a restart, a recreate after a settings change or a new hub image leaves every
# running lab (and its kernels) running, and the hub finds them again from its database when it is back.
# `invoke down` stops them explicitly. A lab that dies on its own is removed at the next poll.
c.JupyterHub.cleanup_servers = False
c.Spawner.poll_interval = 30  # seconds (JupyterHub's default, stated): a dead lab is noticed within ~33 s
c.Spawner.start_timeout = hub.lab_start_timeout  # the wait for a start slot included; a lab that dies fails at once
c.Spawner.http_timeout = 120

# -- services: Prometheus metrics, `invoke policies` ---------------------------------------------------
# Idle labs are culled in the hub (hub_ext.hub.culler), by each user's policy: IDLE_CULLER_TIMEOUT is the default
# policy's idle_timeout (HubforgeSpawner.idle_timeout above), and a group's policy may give its members another.
services, roles = [], []
# `invoke policies export|import`, `invoke restore --user` and `invoke upgrade`'s canary (hub_ext.hub.admincli, run in
# this container): a token kept in the data volume, allowed to write groups, read users, start and stop servers, and
# create and delete the canary account alone, nothing else.
services.append({"name": "hubforge-cli", "api_token": stored_key(DATA / "cli-token")})
roles.append(
    {
        "name": "hubforge-cli",
        "services": ["hubforge-cli"],
        "scopes": ["admin:groups", "list:users", "read:users", "servers", f"admin:users!user={CANARY_USER}"],
    }
)
if hub.metrics_token:
    services.append({"name": "metrics", "api_token": hub.metrics_token})
    roles.append({"name": "metrics", "services": ["metrics"], "scopes": ["read:metrics"]})
# Prometheus' pages for admins (access:services), through the hub's login (hub_ext.monitoring.uiproxy); the profile's
# services run on the compose engine only (hubforge.deploy.engine.Stack.monitoring_service)
if hub.monitoring and ENGINE == "compose":
    services.append(
        {
            "name": monitoring.SERVICE_NAME,
            "url": f"http://127.0.0.1:{monitoring.UIPROXY_PORT}",
            "command": [sys.executable, "-m", monitoring.UIPROXY_MODULE, "--upstream", monitoring.UPSTREAM],
            "oauth_no_confirm": True,  # the hub's own page; the access scope still decides who passes
            "display": True,  # listed on the hub's Services menu, for those who may open it
        }
    )
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles
c.JupyterHub.authenticate_prometheus = True  # /hub/metrics needs a token with read:metrics
if hub.backup_schedule != "off":  # the backup service's last success and failure, from its status file
    metrics.watch_backups()

# -- look ---------------------------------------------------------------------------------------------
if hub.logo_uri:
    try:
        c.JupyterHub.logo_file = str(materialize(hub.logo_uri, Path("/tmp/hubforge-logo")))
    except LogoError as exc:
        refuse(str(exc))

# -- the operator's own settings, last ----------------------------------------------------------------
for extra in sorted((HOME / "config.d").glob("*.py")):
    load_subconfig(str(extra))  # noqa: F821 -- provided by JupyterHub's config loader
