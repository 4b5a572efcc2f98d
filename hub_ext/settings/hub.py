"""Hub settings from the environment: parsed and checked here, assigned to traits in jupyterhub_config.py.

Parsing takes a plain mapping (jupyterhub_config.py passes os.environ), so every rule is unit-tested.
Every error is one line naming the variable, what it got and what is valid.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any

from hub_ext.settings.oidc import AUTHENTICATORS, parse_oidc
from hub_ext.settings.parse import USERNAME, ConfigError, flag
from hub_ext.settings.schedule import parse_schedule

DEFAULT_LOG_MAX_SIZE, DEFAULT_LOG_MAX_FILES = "10m", 3  # LOG_MAX_SIZE, LOG_MAX_FILES: at most 30 MB per container

ENGINES = ("compose", "swarm")  # what runs the stack and the labs: `invoke up --engine`, HUBFORGE_ENGINE in the hub
GPU_MODES = {"0": "off", "1": "on", "2": "auto", "off": "off", "on": "on", "auto": "auto"}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([kKmMgGtT])?[bB]?$")
_BASE_URL = re.compile(r"^/([A-Za-z0-9._~-]+/)*$")
_LOG_SIZE = re.compile(r"^([1-9]\d*)([kmg]?)$")


def _int(name: str, raw: str, default: int, minimum: int) -> int:
    raw = raw.strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; use an integer >= {minimum}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is too small; use an integer >= {minimum}")
    return value


def _float(name: str, raw: str, default: float) -> float:
    raw = raw.strip()
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


def parse_admin_password(value: str, minimum: int) -> str:
    """JUPYTERHUB_ADMIN_PASSWORD obeys the same rules as every signup's password (not stripped: a password may
    begin or end with a space)."""
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


# -- the table: every hub setting, declared once --------------------------------------------------------------
# Each setting: its environment variable, the HubConfig field it fills, its default, its reader (the parser and
# the bounds, one line naming the variable on a bad value), its help, and the trait it sets in
# jupyterhub_config.py when there is one. HubConfig, the .env template (`env_template`), the docs' settings
# reference (docs/_ext) and the traits' defaults are made from it or checked against it
# (tests/unit/test_settings_table.py).
Reader = Callable[["Setting", str, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Setting:
    name: str  # the environment variable (.env)
    field: str  # HubConfig's field
    default: Any  # the value when it is unset or empty
    read: Reader  # (setting, raw value, the fields read before it) -> the value, or ConfigError in one line
    help: str
    trait: str | None = None  # Class.trait whose default this is, when the setting sets a trait
    shown: str | None = None  # the default as .env and the docs show it, when it is not the value itself

    def shown_default(self) -> str:
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, bool):
            return "1" if self.default else "0"
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return "" if self.default in ("", (), {}) else str(self.default)


def integer(minimum: int) -> Reader:
    return lambda setting, raw, _: _int(setting.name, raw, setting.default, minimum)


def number() -> Reader:
    return lambda setting, raw, _: _float(setting.name, raw, setting.default)


def boolean() -> Reader:
    return lambda setting, raw, _: flag({setting.name: raw}, setting.name, setting.default)


def text() -> Reader:
    return lambda setting, raw, _: raw.strip() or setting.default


def parse_absolute_path(name: str, raw: str) -> str:
    if not raw.startswith("/") or ".." in raw.split("/") or any(c in raw for c in ":\n"):
        raise ConfigError(f"{name}={raw!r} is not an absolute host path without ':' or '..'")
    return raw.rstrip("/") or "/"


def absolute_path() -> Reader:
    return lambda setting, raw, _: parse_absolute_path(setting.name, raw.strip() or setting.default)


def memory() -> Reader:
    return lambda setting, raw, _: parse_memory(setting.name, raw.strip() or setting.default)


def username() -> Reader:
    return lambda setting, raw, _: parse_username(raw.strip() or setting.default, setting.name)


def choice(values: Sequence[str], hint: str) -> Reader:
    def read(setting: Setting, raw: str, _: Mapping[str, Any]) -> str:
        value = raw.strip().lower() or setting.default
        if value not in values:
            raise ConfigError(f"{setting.name}={raw!r} is not valid; {hint}")
        return value

    return read


def choice_pattern(pattern: str, hint: str) -> Reader:
    """A text that must match `pattern` (after stripping; empty: the default)."""
    compiled = re.compile(pattern)

    def read(setting: Setting, raw: str, _: Mapping[str, Any]) -> str:
        value = raw.strip() or setting.default
        if not compiled.match(value):
            raise ConfigError(f"{setting.name}={raw!r} is not valid; {hint}")
        return value

    return read


def admin_password() -> Reader:
    # the password rules of every signup; PASSWORD_MIN_LENGTH is read before it
    return lambda setting, raw, earlier: parse_admin_password(raw, earlier["password_min_length"])


def base_url() -> Reader:
    return lambda setting, raw, _: parse_base_url(raw)


def gpu_mode() -> Reader:
    return lambda setting, raw, _: parse_gpu_mode(raw, setting.name)


def subnet_pool() -> Reader:
    return lambda setting, raw, _: parse_subnet_pool(raw)


def ranges() -> Reader:
    return lambda setting, raw, _: parse_ranges(raw, setting.name)


def log_size() -> Reader:
    return lambda setting, raw, _: parse_log_size(raw)


def volume_driver() -> Reader:
    return lambda setting, raw, _: parse_volume_driver(raw)


def driver_options() -> Reader:
    # LAB_VOLUME_DRIVER is read before it
    return lambda setting, raw, earlier: parse_driver_options(raw, earlier["lab_volume_driver"])


def public_host() -> Reader:
    return lambda setting, raw, _: parse_public_host(raw)


BACKUP_URL_SCHEMES = ("s3:", "rest:")  # restic's remote repositories that the backup image can reach


def parse_backup_repository(raw: str) -> str:
    """BACKUP_REPOSITORY: empty (the default folder), an absolute host path, or a restic s3:/rest: URL."""
    value = raw.strip()
    if not value or value.startswith(BACKUP_URL_SCHEMES):
        return value
    if value.startswith("sftp:"):
        raise ConfigError(
            f"BACKUP_REPOSITORY={raw!r}: sftp repositories are not supported yet (the backup image has no ssh client); "
            "mount the remote folder (sshfs, NFS) and give its path, or use s3: or rest:"
        )
    if not value.startswith("/"):
        raise ConfigError(f"BACKUP_REPOSITORY={raw!r} is not valid; use an absolute host path, s3:... or rest:...")
    return parse_absolute_path("BACKUP_REPOSITORY", value)


def backup_repository() -> Reader:
    return lambda setting, raw, _: parse_backup_repository(raw)


def schedule() -> Reader:
    # kept as its normalised text (a plain field of HubConfig); hub_ext.settings.schedule reads it back
    return lambda setting, raw, _: parse_schedule(setting.name, raw).text


def optional_path() -> Reader:
    return lambda setting, raw, _: parse_absolute_path(setting.name, raw.strip()) if raw.strip() else ""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "AUTHENTICATOR",
        "authenticator",
        "native",
        choice(AUTHENTICATORS, "use native (signup with approval) or oidc (OpenID Connect)"),
        (
            "`native`: NativeAuthenticator, self-signup with the admin's approval. `oidc`: sign in at your OpenID "
            "Connect provider (the OIDC_* settings: the identity provider how-to)."
        ),
    ),
    Setting(
        "JUPYTERHUB_ADMIN",
        "admin",
        "admin",
        username(),
        ("The admin user. Signing up under this name needs the bootstrap secret and is then approved at once."),
    ),
    Setting(
        "ENABLE_SIGNUP",
        "enable_signup",
        True,
        boolean(),
        (
            "`1`: users sign up and wait for approval at `/hub/authorize`. `0`: no signup page once the admin "
            "exists. Admins add users on the admin page and set their passwords at `/hub/authorize`."
        ),
    ),
    Setting(
        "PASSWORD_MIN_LENGTH",
        "password_min_length",
        8,
        integer(1),
        ("Minimum password length. Common passwords are always refused."),
    ),
    Setting(
        "JUPYTERHUB_ADMIN_PASSWORD",
        "admin_password",
        "",
        admin_password(),
        (
            "The admin's initial password. If set, the admin account is made at the first start and no bootstrap "
            "secret is needed. It must pass the same rules as any password (length, not common). It is used once; "
            "changing it later changes nothing."
        ),
        trait="HubforgeAuthenticator.admin_password",
    ),
    Setting(
        "JUPYTERHUB_BASE_URL",
        "base_url",
        "/",
        base_url(),
        ("URL prefix, e.g. `/jupyterhub`."),
    ),
    Setting(
        "ENABLE_GPU_SUPPORT",
        "gpu_mode",
        "auto",
        gpu_mode(),
        ("`2` auto (probe), `1` on, `0` off. `--gpu` overrides it."),
        trait="HubforgeSpawner.gpu_mode",
        shown="2",
    ),
    Setting(
        "LOGIN_MAX_FAILURES",
        "login_max_failures",
        5,
        integer(1),
        (
            "Failed logins for one account *from one address* before each further try from there must wait (1 s, "
            "doubling). Other addresses are not slowed."
        ),
        trait="HubforgeAuthenticator.login_free_failures",
    ),
    Setting(
        "LOGIN_LOCKOUT_SECONDS",
        "login_lockout_seconds",
        600,
        integer(1),
        ("The longest of those waits, in seconds."),
        trait="HubforgeAuthenticator.login_max_delay",
    ),
    Setting(
        "LOGIN_ADDRESS_LIMIT",
        "login_address_limit",
        30,
        integer(1),
        (
            "Failed logins plus signup attempts one client address may make per minute. Successful logins are "
            "free, so a class behind one NAT logs in; raise it if many people *sign up* from one address in the "
            "same minute."
        ),
        trait="HubforgeAuthenticator.login_address_limit",
    ),
    Setting(
        "LAB_MEM_LIMIT",
        "lab_mem_limit",
        "4G",
        memory(),
        ("Memory limit per lab (Docker syntax: `512M`, `4G`)."),
    ),
    Setting(
        "LAB_CPU_LIMIT",
        "lab_cpu_limit",
        2.0,
        number(),
        ("CPUs per lab."),
    ),
    Setting(
        "LAB_PIDS_LIMIT",
        "lab_pids_limit",
        1024,
        integer(16),
        ("Processes per lab."),
        trait="HubforgeSpawner.pids_limit",
    ),
    Setting(
        "LAB_CPU_SHARES",
        "lab_cpu_shares",
        128,
        integer(2),
        (
            "A lab's CPU weight when the host is busy (the hub has Docker's default, 1024, so 8 labs' worth), so "
            "logins and pages stay quick while labs compute. A lab alone still gets every idle core."
        ),
        trait="HubforgeSpawner.cpu_shares",
    ),
    Setting(
        "LAB_START_CONCURRENCY",
        "lab_start_concurrency",
        0,
        integer(0),
        (
            "Most labs starting at the same moment; the others wait in arrival order, and their spawn page says "
            "how many are ahead. `0`: one less than the host's CPU cores, at least one."
        ),
        trait="HubforgeSpawner.start_concurrency",
    ),
    Setting(
        "LAB_START_TIMEOUT",
        "lab_start_timeout",
        600,
        integer(30),
        (
            "Seconds a lab may take to start, the wait for a start slot included. A lab whose container exits "
            "fails at once."
        ),
    ),
    Setting(
        "LAB_SERVER_PROXY",
        "lab_server_proxy",
        False,
        boolean(),
        (
            "`1` turns on jupyter-server-proxy in the labs: web apps a user runs are reached at `/proxy/<port>/`. "
            "Off, each lab starts 0.25 s of CPU sooner."
        ),
        trait="HubforgeSpawner.server_proxy",
    ),
    Setting(
        "LAB_SANDBOXES",
        "lab_sandboxes",
        True,
        boolean(),
        (
            "Each lab runs in the network namespace of a small sandbox container that stays on the lab's network "
            "while the stack is up, so a lab's start or stop changes nothing in the host's network (a browser on the "
            "host sees each change and fails its requests in flight). `0`: the lab joins its network itself, and the "
            "network goes at each stop. Compose only: Swarm's services join their overlays themselves."
        ),
        trait="HubforgeSpawner.lab_sandboxes",
    ),
    Setting(
        "LAB_READ_ONLY_ROOT",
        "lab_read_only_root",
        True,
        boolean(),
        (
            "Labs get a read-only root filesystem and a private in-memory `/tmp`; only the volumes are writable. "
            "`0` for lab images that write elsewhere at run time."
        ),
        trait="HubforgeSpawner.read_only_root",
    ),
    Setting(
        "LAB_SUBNET_POOL",
        "lab_subnet_pool",
        "10.213.0.0/16",
        subnet_pool(),
        (
            "IPv4 range the lab networks come from, a /29 per running lab; a /24 at least. Change it if it "
            "collides with a network of yours."
        ),
        trait="HubforgeSpawner.subnet_pool",
    ),
    Setting(
        "LAB_ALLOWED_RANGES",
        "lab_allowed_ranges",
        (),
        ranges(),
        (
            "Comma-separated private ranges or addresses labs may reach despite the guard, e.g. "
            "`10.1.2.0/24,192.168.5.10` (an HTTP proxy, a package mirror, a database)."
        ),
    ),
    Setting(
        "LOG_MAX_SIZE",
        "log_max_size",
        "10m",
        log_size(),
        (
            "Every container's log (hub, guard, labs, Swarm services and helpers) is json-file, rotated at this "
            "size (`k`, `m`, `g`; at least `1m`): a lab that prints without end cannot fill `/var/lib/docker`."
        ),
    ),
    Setting(
        "LOG_MAX_FILES",
        "log_max_files",
        3,
        integer(1),
        ("How many rotated log files each container keeps: at most `LOG_MAX_SIZE` × this much log per container."),
    ),
    Setting(
        "LAB_NETWORK_GUARD",
        "lab_network_guard",
        True,
        boolean(),
        (
            "`0` runs no network guard: labs can then reach private and link-local addresses (cloud metadata "
            "included). Only for hosts where you firewall the lab networks yourself."
        ),
    ),
    Setting(
        "LAB_VOLUME_DRIVER",
        "lab_volume_driver",
        "",
        volume_driver(),
        (
            "Swarm engine only. Empty: node-pinned volumes (each user's lab stays on the node that holds their "
            "volumes). A driver name (`local` with NFS options, or a plugin) gives shared storage: every lab "
            "volume comes from it and labs can run on any node."
        ),
        trait="HubforgeSwarmSpawner.volume_driver",
    ),
    Setting(
        "LAB_VOLUME_DRIVER_OPTS",
        "lab_volume_driver_opts",
        {},
        driver_options(),
        (
            "The driver's options as `key=value` pairs separated by `;`, e.g. "
            "`type=nfs;o=addr=10.0.0.5,rw,nfsvers=4;device=:/exports/hubforge`."
        ),
        trait="HubforgeSwarmSpawner.volume_driver_options",
    ),
    Setting(
        "LAB_QUOTA_DIR",
        "lab_quota_dir",
        "/var/lib/hubforge/quotas",
        absolute_path(),
        (
            "Host folder of the files that hold quota'd volumes (group policies' `home_quota`, `workspace_quota`): "
            "one sparse ext4 file per volume, loop-mounted by Docker's local driver, under a subfolder per project."
        ),
        trait="HubforgeSpawner.quota_dir",
    ),
    Setting(
        "AUDIT_RETENTION_DAYS",
        "audit_retention_days",
        365,
        integer(0),
        (
            "Days the audit trail keeps a record (the Audit page, GET /hub/api/hubforge/audit); older ones are dropped "
            "when the hub starts. `0` keeps every record."
        ),
        trait="HubforgeAuthMixin.audit_retention_days",
    ),
    Setting(
        "ACTIVITY_INTERVAL",
        "activity_interval",
        15,
        integer(5),
        (
            "Seconds between two looks of the activity collector at the labs (the Activity page, "
            "GET /hub/api/hubforge/activity): one Docker listing for every lab, and each lab's cgroup files."
        ),
        trait="HubforgeAuthMixin.activity_interval",
    ),
    Setting(
        "ACTIVITY_RETENTION_DAYS",
        "activity_retention_days",
        7,
        integer(1),
        (
            "Days the hourly CPU, memory and GPU figures per user are kept (the usage report, "
            "GET /hub/api/hubforge/usage)."
        ),
        trait="HubforgeAuthMixin.activity_retention_days",
    ),
    Setting(
        "LAB_ADMIN_ACCESS",
        "lab_admin_access",
        False,
        boolean(),
        (
            "`1` lets admins open other users' labs. Off, an admin still starts, stops, restarts and resets every "
            "server, but the hub refuses them the lab's own login (a lab's code runs with the rights of whoever "
            "opens it). A server its owner shares with the admin still opens."
        ),
        trait="HubforgeAuthMixin.admin_lab_access",
    ),
    Setting(
        "HUB_MEM_LIMIT",
        "hub_mem_limit",
        "2G",
        memory(),
        (
            "Memory limit of the hub container (JupyterHub, the proxy and the bcrypt threads; about 160 MiB with "
            "20 labs running)."
        ),
    ),
    Setting(
        "HUB_CPU_LIMIT",
        "hub_cpu_limit",
        2.0,
        number(),
        ("CPUs of the hub container; cut to the Docker daemon's CPU count when it has fewer."),
    ),
    Setting(
        "HUB_PIDS_LIMIT",
        "hub_pids_limit",
        2048,
        integer(64),
        ("Processes and threads of the hub container."),
    ),
    Setting(
        "ACTIVE_SERVER_LIMIT",
        "active_server_limit",
        0,
        integer(0),
        (
            "Most labs running at once (JupyterHub's `active_server_limit`); a start beyond it is refused with a "
            "message to try later. `0`: no limit."
        ),
    ),
    Setting(
        "CONCURRENT_SPAWN_LIMIT",
        "concurrent_spawn_limit",
        100,
        integer(0),
        ("Most labs starting at the same moment (JupyterHub's `concurrent_spawn_limit`). `0`: no limit."),
    ),
    Setting(
        "IDLE_CULLER_ENABLED",
        "idle_culler_enabled",
        False,
        boolean(),
        (
            "`1` stops labs idle longer than `IDLE_CULLER_TIMEOUT` (the default policy's `idle_timeout`; the hub's own "
            "culler, which also applies each group policy's `idle_timeout` and `max_session`)."
        ),
    ),
    Setting(
        "IDLE_CULLER_TIMEOUT",
        "idle_culler_timeout",
        3600,
        integer(60),
        ("Seconds of inactivity before a lab is stopped, for users whose groups set no `idle_timeout`."),
    ),
    Setting(
        "JUPYTERHUB_LOGO_URI",
        "logo_uri",
        "",
        text(),
        (
            "Custom logo: an `http(s)://` URL (downloaded at start), a `file://` path under "
            "`/srv/jupyterhub/logo/` in the hub container (mount your file there; any other path is refused, so "
            "the logo cannot publish the hub's secrets), or a `data:image/...;base64,` URI."
        ),
    ),
    Setting(
        "JUPYTERHUB_METRICS_TOKEN",
        "metrics_token",
        "",
        text(),
        ("Token of the `metrics` service (scope `read:metrics`), used to scrape `/hub/metrics`."),
        shown="(generated)",
    ),
    Setting(
        "MONITORING",
        "monitoring",
        False,
        boolean(),
        (
            "`1` adds the monitoring profile to the stack: Prometheus (scraping the hub's `/hub/metrics` with the "
            "metrics token, the host's disk and the labs' figures), its alert rules, Alertmanager and node-exporter; "
            "Prometheus' pages open to hub admins at `/services/prometheus/`. `invoke up --monitoring` turns it on "
            "for one run. Compose only."
        ),
    ),
    Setting(
        "MONITORING_INTERVAL",
        "monitoring_interval",
        15,
        integer(1),
        (
            "Seconds between two scrapes, and between two evaluations of the alert rules. An alert with `for: 1m` "
            "fires between 1 minute and 1 minute plus twice this after its condition starts."
        ),
    ),
    Setting(
        "MONITORING_RETENTION",
        "monitoring_retention",
        "15d",
        choice_pattern(r"^[1-9]\d*[hdwy]$", "use a number and h, d, w or y, e.g. 15d"),
        "How long Prometheus keeps its samples (`--storage.tsdb.retention.time`), in its own volume.",
    ),
    Setting(
        "HUBFORGE_PUBLIC_HOST",
        "public_host",
        "",
        public_host(),
        (
            "The hub's host name: the printed URL, the self-signed certificate and the labs' subdomains "
            "(`<user>.<host>`). Give it a wildcard DNS record."
        ),
        shown="hub.localhost",
    ),
    Setting(
        "LAB_SUBDOMAINS",
        "lab_subdomains",
        True,
        boolean(),
        (
            "Each lab on its own origin, `https://<user>.<host>/`. `0` serves labs under the hub's origin "
            "(`/user/<name>/`): a lab's JavaScript then runs with the hub session of whoever opens any page of "
            "it; `invoke status` and the admin page warn."
        ),
    ),
    Setting(
        "SSL_CERT",
        "ssl_cert",
        "",
        text(),
        (
            "Your own certificate (a path in the hub container); with `SSL_KEY`. Empty: a self-signed one for the "
            "hub's names."
        ),
    ),
    Setting(
        "SSL_KEY",
        "ssl_key",
        "",
        text(),
        ("The key of `SSL_CERT` (a path in the hub container)."),
    ),
    Setting(
        "BACKUP_REPOSITORY",
        "backup_repository",
        "",
        backup_repository(),
        (
            "Where `invoke backup` keeps its restic repository: a folder on this host, or `s3:HOST/BUCKET/PATH` or "
            "`rest:URL` (their credentials from restic's own variables, e.g. `AWS_ACCESS_KEY_ID`, in the environment "
            "of `invoke`; for the scheduled backups, in `.env`)."
        ),
        shown="/var/lib/hubforge/backups/<project>",
    ),
    Setting(
        "BACKUP_PASSWORD_FILE",
        "backup_password_file",
        "",
        optional_path(),
        (
            "The file that holds the repository's password (a host path). Empty: `backup-password` in the stack's "
            "run folder, made at the first backup. Keep a copy elsewhere: without it the backups cannot be read."
        ),
        shown="<run folder>/backup-password",
    ),
    Setting(
        "BACKUP_SCHEDULE",
        "backup_schedule",
        "off",
        schedule(),
        (
            "When the stack's `backup` service takes a snapshot by itself: `off`, `hourly`, `daily`, `daily HH:MM` "
            "(UTC) or `every N` with `m`, `h` or `d` (`every 6h`: at 00:00, 06:00, 12:00 and 18:00 UTC). Each "
            "scheduled snapshot is followed by the retention below; its outcome shows in `invoke status` and on "
            "`/hub/metrics`."
        ),
    ),
    Setting(
        "BACKUP_KEEP_DAILY",
        "backup_keep_daily",
        7,
        integer(0),
        (
            "Retention after each scheduled backup: the last snapshot of each of this many days is kept (`restic "
            "forget --keep-daily`). Applies to every snapshot of the project, those of `invoke backup` too. `0`: "
            "no daily rule; with all three rules at `0` nothing is forgotten."
        ),
    ),
    Setting(
        "BACKUP_KEEP_WEEKLY",
        "backup_keep_weekly",
        4,
        integer(0),
        ("Retention: the last snapshot of each of this many weeks is kept too (`--keep-weekly`)."),
    ),
    Setting(
        "BACKUP_KEEP_MONTHLY",
        "backup_keep_monthly",
        6,
        integer(0),
        ("Retention: the last snapshot of each of this many months is kept too (`--keep-monthly`)."),
    ),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}
# Families of variables beside the table: ENABLE_SERVICE_<NAME> (passed to the labs) and OIDC_* (hub_ext.settings.oidc).
SERVICE_PREFIX = "ENABLE_SERVICE_"


def default_of(name: str) -> Any:
    """The table's default of a setting (a copy): a trait whose default it is names it so, and is checked against it."""
    return copy.deepcopy(BY_NAME[name].default)


HubConfig = make_dataclass(
    "HubConfig",
    [
        (
            s.field,
            type(s.default),
            dataclasses.field(default_factory=type(s.default))
            if isinstance(s.default, dict)
            else dataclasses.field(default=s.default),
        )
        for s in SETTINGS
    ]
    + [
        ("lab_services", dict, dataclasses.field(default_factory=dict)),  # ENABLE_SERVICE_* passed to the labs
        ("oidc", object, dataclasses.field(default=None)),
    ],  # the OIDC_* settings (OIDCConfig), with AUTHENTICATOR=oidc
    frozen=True,
)
HubConfig.__module__ = __name__  # make_dataclass's own `module=` is Python 3.12's
HubConfig.__doc__ = "Every hub setting, read and checked by from_environ; one field for each row of SETTINGS."


def env_template(metrics_token: str) -> str:
    """The .env that `invoke up` writes on the first run: every setting of the table, commented out with its
    default, and the generated metrics token."""
    lines = [
        "# hubforge stack settings (Compose .env). Kept across `invoke up`; edit and run `invoke up` again.",
        "# Every variable, with its default and what it does: docs/reference/settings.md.",
    ]
    for setting in SETTINGS:
        if setting.name == "JUPYTERHUB_METRICS_TOKEN":
            lines.append(f"{setting.name}={metrics_token}")
        else:
            lines.append(f"# {setting.name}={setting.shown_default()}")
    return "\n".join(lines) + "\n"


def _from_environ(env: Mapping[str, str]) -> HubConfig:
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        values[setting.field] = setting.read(setting, env.get(setting.name, ""), values)
    services = {k: v for k, v in sorted(env.items()) if k.startswith(SERVICE_PREFIX)}
    oidc = parse_oidc(env) if values["authenticator"] == "oidc" else None
    return HubConfig(
        **values,
        lab_services={k: "1" if flag(env, k, False) else "0" for k in services},  # each must be a valid flag
        oidc=oidc,
    )
