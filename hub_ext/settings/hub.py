"""Hub settings from the environment: parsed and checked here, assigned to traits in jupyterhub_config.py.

Parsing takes a plain mapping (jupyterhub_config.py passes os.environ), so every rule is unit-tested.
Every error is one line naming the variable, what it got and what is valid.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hub_ext.settings.oidc import AUTHENTICATORS, OIDCConfig, parse_oidc
from hub_ext.settings.parse import USERNAME, ConfigError, flag

DEFAULT_LOG_MAX_SIZE, DEFAULT_LOG_MAX_FILES = "10m", 3  # LOG_MAX_SIZE, LOG_MAX_FILES: at most 30 MB per container

ENGINES = ("compose", "swarm")  # what runs the stack and the labs: `invoke up --engine`, HUBFORGE_ENGINE in the hub
GPU_MODES = {"0": "off", "1": "on", "2": "auto", "off": "off", "on": "on", "auto": "auto"}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([kKmMgGtT])?[bB]?$")
_BASE_URL = re.compile(r"^/([A-Za-z0-9._~-]+/)*$")
_LOG_SIZE = re.compile(r"^([1-9]\d*)([kmg]?)$")


@dataclass(frozen=True)
class HubConfig:
    admin: str = "admin"
    enable_signup: bool = True
    base_url: str = "/"
    gpu_mode: str = "auto"
    password_min_length: int = 8
    login_max_failures: int = 5
    login_lockout_seconds: int = 600
    login_address_limit: int = 30
    admin_password: str = ""
    lab_mem_limit: str = "4G"
    lab_cpu_limit: float = 2.0
    lab_pids_limit: int = 1024
    lab_cpu_shares: int = 128
    lab_read_only_root: bool = True
    hub_mem_limit: str = "2G"
    hub_cpu_limit: float = 2.0
    hub_pids_limit: int = 2048
    active_server_limit: int = 0
    concurrent_spawn_limit: int = 100
    lab_start_concurrency: int = 0  # 0: one less than the host's CPU cores, at least one
    lab_start_timeout: int = 600  # seconds, the wait for a start slot included
    lab_server_proxy: bool = False
    idle_culler_enabled: bool = False
    idle_culler_timeout: int = 3600
    logo_uri: str = ""
    metrics_token: str = ""
    lab_services: dict[str, str] = field(default_factory=dict)  # ENABLE_SERVICE_* passed to the labs
    lab_subnet_pool: str = "10.213.0.0/16"
    lab_allowed_ranges: tuple[str, ...] = ()
    lab_network_guard: bool = True
    log_max_size: str = DEFAULT_LOG_MAX_SIZE  # every container's json-file log rotates at this size...
    log_max_files: int = DEFAULT_LOG_MAX_FILES  # ...and keeps this many files
    lab_volume_driver: str = ""  # swarm engine: shared storage; empty: node-pinned local volumes
    lab_volume_driver_opts: dict[str, str] = field(default_factory=dict)
    lab_admin_access: bool = False
    public_host: str = ""
    lab_subdomains: bool = True
    authenticator: str = "native"  # AUTHENTICATOR: native (signup and approval) or oidc (an OpenID Connect provider)
    oidc: OIDCConfig | None = None  # the OIDC_* settings, with AUTHENTICATOR=oidc


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; use an integer >= {minimum}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is too small; use an integer >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; use e.g. 0.5 or 2") from None
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def parse_memory(name: str, raw: str) -> str:
    """Docker memory limits: 512M, 4G, 1.5G, 1073741824. Returned in Docker's own syntax."""
    match = _MEMORY.match(raw.strip())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{name}={raw!r} is not a memory size; use e.g. 512M, 4G or a byte count")
    return raw.strip().upper().rstrip("B") or raw


def parse_log_size(raw: str) -> str:
    """LOG_MAX_SIZE: json-file's max-size, a whole number of bytes with k, m or g (10m). At least 1m, so the few files
    kept still hold what a failing container last said."""
    value = raw.strip().lower().removesuffix("b") or DEFAULT_LOG_MAX_SIZE
    match = _LOG_SIZE.match(value)
    size = int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ") if match else 0
    if size < 1024**2:
        raise ConfigError(f"LOG_MAX_SIZE={raw!r} is not a log size of at least 1m; use e.g. 10m or 1g")
    return value


def parse_gpu_mode(raw: str, name: str = "ENABLE_GPU_SUPPORT") -> str:
    value = raw.strip().lower()
    if value == "":
        return "auto"
    if value not in GPU_MODES:
        raise ConfigError(f"{name}={raw!r} is not valid; use 2 (auto), 1 (on) or 0 (off)")
    return GPU_MODES[value]


def parse_base_url(raw: str) -> str:
    """A URL prefix such as /jupyterhub/; the trailing slash is added when missing."""
    value = raw.strip() or "/"
    if not value.endswith("/"):
        value += "/"
    if not _BASE_URL.match(value) or "//" in value:
        raise ConfigError(f"JUPYTERHUB_BASE_URL={raw!r} is not a URL prefix; use e.g. / or /jupyterhub/")
    return value


def parse_username(raw: str, name: str) -> str:
    value = raw.strip()
    if not USERNAME.match(value):
        raise ConfigError(f"{name}={raw!r} is not a valid username; use 1-64 characters without spaces or '/'")
    return value.lower()  # JupyterHub normalises usernames to lower case


def parse_subnet_pool(raw: str) -> str:
    """LAB_SUBNET_POOL: an IPv4 range that holds at least one lab network (a /29 each)."""
    value = raw.strip() or "10.213.0.0/16"
    try:
        pool = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ConfigError(f"LAB_SUBNET_POOL={raw!r} is not an IPv4 network; use e.g. 10.213.0.0/16") from None
    if pool.version != 4 or pool.prefixlen > 24:
        raise ConfigError(f"LAB_SUBNET_POOL={raw!r} is too small or not IPv4; use a /24 or larger, e.g. 10.213.0.0/16")
    return str(pool)


def parse_ranges(raw: str, name: str) -> tuple[str, ...]:
    """A comma-separated list of IPv4 networks or addresses, e.g. `10.1.2.0/24,192.168.5.10`."""
    ranges = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(
                f"{name}: {item!r} is not an IPv4 network or address; use e.g. 10.1.2.0/24,192.168.5.10"
            ) from None
        if net.version != 4:
            raise ConfigError(f"{name}: {item!r} is IPv6; labs have IPv4 only, list IPv4 ranges")
        ranges.append(str(net))
    return tuple(ranges)


_DRIVER = re.compile(r"^[a-z0-9][a-z0-9._/:-]{0,127}$")


def parse_volume_driver(raw: str) -> str:
    """LAB_VOLUME_DRIVER: a volume driver's name (local, or a plugin such as vieux/sshfs:latest), or empty."""
    value = raw.strip()
    if value and not _DRIVER.match(value):
        raise ConfigError(f"LAB_VOLUME_DRIVER={raw!r} is not a volume driver name; use e.g. local or vieux/sshfs")
    return value


def parse_driver_options(raw: str, driver: str) -> dict[str, str]:
    """LAB_VOLUME_DRIVER_OPTS: `key=value` pairs separated by `;` (NFS's `o` has commas of its own):
    type=nfs;o=addr=10.0.0.5,rw,nfsvers=4;device=:/exports/hubforge"""
    options = {}
    for item in (part.strip() for part in raw.split(";")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"LAB_VOLUME_DRIVER_OPTS: {item!r} is not key=value; use e.g. "
                "type=nfs;o=addr=10.0.0.5,rw;device=:/export"
            )
        options[key.strip()] = value.strip()
    if options and not driver:
        raise ConfigError(
            "LAB_VOLUME_DRIVER_OPTS is set but LAB_VOLUME_DRIVER is empty; set LAB_VOLUME_DRIVER=local for NFS"
        )
    return options


DEFAULT_HOST = "hub.localhost"  # browsers resolve *.localhost to loopback by themselves (RFC 6761)
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def parse_public_host(raw: str) -> str:
    """HUBFORGE_PUBLIC_HOST: a DNS name or an IP address, without scheme, port or path."""
    value = raw.strip().lower().rstrip(".")
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ConfigError(
            f"HUBFORGE_PUBLIC_HOST={raw!r} is not a host name; use e.g. hub.example.org (no scheme, port or path)"
        )
    return value


def subdomain_problem(host: str) -> str | None:
    """Why labs cannot have their own subdomains of `host`, or None. Browsers take no wildcard certificate
    right under a top-level name (`*.localhost`, `*.lan`), and an IP address has no subdomains."""
    try:
        ipaddress.ip_address(host)
        return (
            f"HUBFORGE_PUBLIC_HOST={host} is an IP address, which has no subdomains for the labs; "
            "use a DNS name with a wildcard record, or set LAB_SUBDOMAINS=0"
        )
    except ValueError:
        pass
    if "." not in host:
        return (
            f"HUBFORGE_PUBLIC_HOST={host} has a single label: browsers accept no wildcard certificate *.{host}; "
            f"use a name with a dot (e.g. hub.{host}), or set LAB_SUBDOMAINS=0"
        )
    return None


def hub_host(config: HubConfig) -> str:
    """The name the hub is reached by: HUBFORGE_PUBLIC_HOST, else hub.localhost (labs at <user>.hub.localhost)."""
    return config.public_host or DEFAULT_HOST


def certificate_names(config: HubConfig) -> list[str]:
    """What the self-signed certificate covers: the hub's name, every lab's (a wildcard), and loopback."""
    host = hub_host(config)
    names = [host] + ([f"*.{host}"] if config.lab_subdomains and not subdomain_problem(host) else [])
    return list(dict.fromkeys([*names, "localhost", "127.0.0.1"]))


def common_passwords() -> frozenset[str]:
    """NativeAuthenticator's list of common passwords (empty where it is not installed, e.g. a bare host)."""
    spec = importlib.util.find_spec("nativeauthenticator")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    listing = Path(next(iter(spec.submodule_search_locations))) / "common-credentials.txt"
    return frozenset(listing.read_text().splitlines()) if listing.exists() else frozenset()


def parse_admin_password(env: Mapping[str, str], minimum: int) -> str:
    """JUPYTERHUB_ADMIN_PASSWORD obeys the same rules as every signup's password."""
    value = env.get("JUPYTERHUB_ADMIN_PASSWORD", "")
    if not value:
        return ""
    if len(value) < minimum:
        raise ConfigError(
            f"JUPYTERHUB_ADMIN_PASSWORD is too short ({len(value)} characters); "
            f"use at least PASSWORD_MIN_LENGTH={minimum}"
        )
    if value in common_passwords():
        raise ConfigError("JUPYTERHUB_ADMIN_PASSWORD is on the list of common passwords; choose another")
    return value


def from_environ(env: Mapping[str, str]) -> HubConfig:
    """All hub settings from `env`, checked. Raises ConfigError with one line on the first bad value."""
    config = _from_environ(env)
    if config.lab_subdomains:
        problem = subdomain_problem(hub_host(config))
        if problem:
            raise ConfigError(problem)
    return config


def parse_authenticator(raw: str) -> str:
    value = raw.strip().lower() or "native"
    if value not in AUTHENTICATORS:
        raise ConfigError(
            f"AUTHENTICATOR={raw!r} is not valid; use native (signup with approval) or oidc (OpenID Connect)"
        )
    return value


def _from_environ(env: Mapping[str, str]) -> HubConfig:
    authenticator = parse_authenticator(env.get("AUTHENTICATOR", ""))
    oidc = parse_oidc(env) if authenticator == "oidc" else None
    services = {k: v for k, v in sorted(env.items()) if k.startswith("ENABLE_SERVICE_")}
    for key in services:
        flag(env, key, False)  # each must be a valid flag
    volume_driver = parse_volume_driver(env.get("LAB_VOLUME_DRIVER", ""))
    return HubConfig(
        admin=parse_username(env.get("JUPYTERHUB_ADMIN", "admin") or "admin", "JUPYTERHUB_ADMIN"),
        enable_signup=flag(env, "ENABLE_SIGNUP", True),
        base_url=parse_base_url(env.get("JUPYTERHUB_BASE_URL", "/")),
        gpu_mode=parse_gpu_mode(env.get("ENABLE_GPU_SUPPORT", "")),
        password_min_length=_int(env, "PASSWORD_MIN_LENGTH", 8, 1),
        login_max_failures=_int(env, "LOGIN_MAX_FAILURES", 5, 1),
        login_lockout_seconds=_int(env, "LOGIN_LOCKOUT_SECONDS", 600, 1),
        login_address_limit=_int(env, "LOGIN_ADDRESS_LIMIT", 30, 1),
        admin_password=parse_admin_password(env, _int(env, "PASSWORD_MIN_LENGTH", 8, 1)),
        lab_mem_limit=parse_memory("LAB_MEM_LIMIT", env.get("LAB_MEM_LIMIT", "") or "4G"),
        lab_cpu_limit=_float(env, "LAB_CPU_LIMIT", 2.0),
        lab_pids_limit=_int(env, "LAB_PIDS_LIMIT", 1024, 16),
        lab_cpu_shares=_int(env, "LAB_CPU_SHARES", 128, 2),
        lab_read_only_root=flag(env, "LAB_READ_ONLY_ROOT", True),
        hub_mem_limit=parse_memory("HUB_MEM_LIMIT", env.get("HUB_MEM_LIMIT", "") or "2G"),
        hub_cpu_limit=_float(env, "HUB_CPU_LIMIT", 2.0),
        hub_pids_limit=_int(env, "HUB_PIDS_LIMIT", 2048, 64),
        active_server_limit=_int(env, "ACTIVE_SERVER_LIMIT", 0, 0),
        concurrent_spawn_limit=_int(env, "CONCURRENT_SPAWN_LIMIT", 100, 0),
        lab_start_concurrency=_int(env, "LAB_START_CONCURRENCY", 0, 0),
        lab_start_timeout=_int(env, "LAB_START_TIMEOUT", 600, 30),
        lab_server_proxy=flag(env, "LAB_SERVER_PROXY", False),
        idle_culler_enabled=flag(env, "IDLE_CULLER_ENABLED", False),
        idle_culler_timeout=_int(env, "IDLE_CULLER_TIMEOUT", 3600, 60),
        logo_uri=env.get("JUPYTERHUB_LOGO_URI", "").strip(),
        metrics_token=env.get("JUPYTERHUB_METRICS_TOKEN", "").strip(),
        lab_services={k: "1" if flag(env, k, False) else "0" for k in services},
        lab_subnet_pool=parse_subnet_pool(env.get("LAB_SUBNET_POOL", "")),
        lab_allowed_ranges=parse_ranges(env.get("LAB_ALLOWED_RANGES", ""), "LAB_ALLOWED_RANGES"),
        lab_network_guard=flag(env, "LAB_NETWORK_GUARD", True),
        log_max_size=parse_log_size(env.get("LOG_MAX_SIZE", "")),
        log_max_files=_int(env, "LOG_MAX_FILES", DEFAULT_LOG_MAX_FILES, 1),
        lab_volume_driver=volume_driver,
        lab_volume_driver_opts=parse_driver_options(env.get("LAB_VOLUME_DRIVER_OPTS", ""), volume_driver),
        lab_admin_access=flag(env, "LAB_ADMIN_ACCESS", False),
        public_host=parse_public_host(env.get("HUBFORGE_PUBLIC_HOST", "")),
        lab_subdomains=flag(env, "LAB_SUBDOMAINS", True),
        authenticator=authenticator,
        oidc=oidc,
    )
