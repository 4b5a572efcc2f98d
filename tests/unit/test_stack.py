"""Stack assembly: .env parsing, compose argv, port checks, probe results, logo and TLS files."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
from pathlib import Path

import pytest
import yaml

from hub_ext.hub.logo import LogoError, materialize
from hub_ext.hub.tls import ensure_self_signed
from hubforge.deploy import ComposeStack, StackOptions, compose_argv, validate_port, validate_project
from hubforge.deploy.compose import SERVICE
from hubforge.deploy.settings import config_digest, parse_probe, port_free, read_env_file
from hubforge.errors import HubforgeError

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_env_file_parsing(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# comment\n\nA=1\nexport B = two\nC='quoted value'\nD=\"x=y\"\n")
    assert read_env_file(env) == {"A": "1", "B": "two", "C": "quoted value", "D": "x=y"}
    env.write_text("JUST_A_WORD\n")
    with pytest.raises(HubforgeError, match=r"\.env:1: expected KEY=VALUE"):
        read_env_file(env)
    assert read_env_file(tmp_path / "missing") == {}


def test_compose_argv_adds_the_override_only_when_present(tmp_path):
    base = [
        "docker",
        "compose",
        "--project-name",
        "p",
        "--project-directory",
        str(tmp_path),
        "--file",
        str(tmp_path / "compose.yml"),
    ]
    assert compose_argv("p", tmp_path, "up", "--detach") == base + ["up", "--detach"]
    (tmp_path / "compose.override.yml").write_text("services: {}\n")
    assert compose_argv("p", tmp_path, "ps") == base + ["--file", str(tmp_path / "compose.override.yml"), "ps"]


def test_port_in_use_is_detected():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_free("127.0.0.1", port) is False
    assert port_free("127.0.0.1", port) is True


@pytest.mark.parametrize(
    ("value", "ok"), [("443", True), (8443, True), ("0", False), ("65536", False), ("https", False)]
)
def test_port_validation(value, ok):
    if ok:
        assert validate_port("--port", value) == int(value)
    else:
        with pytest.raises(HubforgeError, match="--port="):
            validate_port("--port", value)


@pytest.mark.parametrize(
    ("name", "ok"),
    [("hubforge", True), ("team-a_2", True), ("Team", False), ("-x", False), ("a b", False), ("", False)],
)
def test_project_validation(name, ok):
    if ok:
        assert validate_project(name) == name
    else:
        with pytest.raises(HubforgeError, match="--project="):
            validate_project(name)


def test_probe_results():
    assert parse_probe(None, 'could not select device driver ""')["reason"].startswith("Docker refused the GPU request")
    found = parse_probe(
        0,
        'noise\n{"gpus": [{"index": 0, "name": "T4", "uuid": "GPU-1", "memory_mb": 15360}], "driver": "535", "cuda": '
        '"12.2"}\n',
    )
    assert found["gpus"][0]["name"] == "T4" and found["reason"] is None
    assert "without JSON" in parse_probe(3, "segfault")["reason"]


def test_logo_from_data_uri(tmp_path):
    path = materialize("data:image/png;base64," + base64.b64encode(PNG).decode(), tmp_path)
    assert path.suffix == ".png" and path.read_bytes() == PNG


def test_logo_from_file_uri(tmp_path):
    (tmp_path / "logo").mkdir()
    source = tmp_path / "logo" / "mine.png"
    source.write_bytes(PNG)
    assert materialize(source.as_uri(), tmp_path / "work", logo_dir=tmp_path / "logo").read_bytes() == PNG


@pytest.mark.parametrize(
    "target", ["data/jupyterhub_cookie_secret", "logo/../data/jupyterhub_cookie_secret", "logo/link.png"]
)
def test_a_file_logo_cannot_publish_other_files(tmp_path, target):
    """/hub/logo serves the logo without login: a file:// logo outside its folder would leak e.g. the cookie secret."""
    (tmp_path / "data").mkdir()
    (tmp_path / "logo").mkdir()
    secret = tmp_path / "data" / "jupyterhub_cookie_secret"
    secret.write_bytes(b"\x89PNG-looking secret")
    (tmp_path / "logo" / "link.png").symlink_to(secret)
    with pytest.raises(LogoError, match="must be in"):
        materialize((tmp_path / target).as_uri(), tmp_path / "work", logo_dir=tmp_path / "logo")


def test_logo_from_http(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "logo.png").write_bytes(PNG)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = materialize(f"http://127.0.0.1:{server.server_port}/logo.png", tmp_path / "work")
    finally:
        server.shutdown()
    assert path.read_bytes() == PNG


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://x/logo.png", "a file:// path or a data: URI"),
        ("file:///srv/jupyterhub/logo/nope.png", "no such file"),
        ("file:///etc/passwd", "must be in /srv/jupyterhub/logo/"),
        ("data:text/plain,hello", "is not an image type"),
        ("data:image/png;base64,@@@", "not valid base64"),
        ("http://127.0.0.1:1/logo.png", "cannot be downloaded"),
    ],
)
def test_bad_logos(tmp_path, uri, message):
    with pytest.raises(LogoError, match=message):
        materialize(uri, tmp_path, timeout=2)


def test_self_signed_certificate_is_made_once(tmp_path):
    from cryptography import x509

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    assert ensure_self_signed(cert, key, ["hub.example.org"]) is True
    names = (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert "hub.example.org" in names.get_values_for_type(x509.DNSName)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    first = cert.read_bytes()
    assert ensure_self_signed(cert, key, ["hub.example.org", "localhost"]) is False and cert.read_bytes() == first


def test_an_older_self_signed_certificate_is_replaced_when_names_are_missing(tmp_path):
    """A stack from before lab subdomains has no wildcard in its certificate: a new one is made."""
    from cryptography import x509

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ensure_self_signed(cert, key, ["hub.localhost"])
    assert ensure_self_signed(cert, key, ["hub.localhost", "*.hub.localhost"]) is True
    names = (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert {"hub.localhost", "*.hub.localhost", "localhost"} <= set(names.get_values_for_type(x509.DNSName))


def test_an_operators_certificate_is_never_replaced(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "corp"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp CA")]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    theirs = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    cert.write_bytes(theirs.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(b"their key")
    assert ensure_self_signed(cert, key, ["hub.localhost", "*.hub.localhost"]) is False
    assert key.read_bytes() == b"their key"


def test_config_digest_follows_the_hub_config_and_config_d(tmp_path):
    """The hub carries this as a label: a changed jupyterhub_config.py or config.d file recreates it at `up`."""
    config_d = tmp_path / "config.d"
    config_d.mkdir()
    first = config_digest("c.A = 1\n", config_d)
    assert config_digest("c.A = 1\n", config_d) == first
    assert config_digest("c.A = 2\n", config_d) != first
    (config_d / "10-mine.py").write_text("c.Spawner.mem_limit = '8G'\n")
    with_extra = config_digest("c.A = 1\n", config_d)
    assert with_extra != first
    (config_d / "10-mine.py").write_text("c.Spawner.mem_limit = '6G'\n")
    assert config_digest("c.A = 1\n", config_d) != with_extra
    (config_d / "notes.txt").write_text("not loaded by the hub")
    assert config_digest("c.A = 1\n", config_d) == config_digest("c.A = 1\n", config_d)


class OneCpuDaemon:
    """The Docker calls `prepare` makes, for a daemon with one CPU (no GPU probe: ENABLE_GPU_SUPPORT=0)."""

    def cpu_count(self):
        return 1

    def containers(self, labels, all=True):
        return []  # no hub of this project runs yet


def rendered_on_one_cpu(tmp_path, env: str) -> dict:
    """The services of compose.yml that `prepare` renders for .env `env`, on a daemon with one CPU."""
    socket_file = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_file))
    options = StackOptions(
        project="p", run_dir=tmp_path / "run", https_port=9443, http_port=9080, docker_socket=str(socket_file)
    )
    options.run_dir.mkdir()
    (options.run_dir / ".env").write_text(env)
    try:
        stack = ComposeStack(options, OneCpuDaemon(), Path(__file__).resolve().parents[2], say=lambda message: None)
        stack.prepare({"hub": "h:1", "gpu-probe": "g:1", "backup": "b:1"}, {"default": "l:1"})
        return yaml.safe_load((options.run_dir / "compose.yml").read_text())["services"]
    finally:
        listener.close()


def test_the_hub_gets_memory_cpu_and_pids_limits_within_the_daemons_cpus(tmp_path):
    hub = rendered_on_one_cpu(tmp_path, "ENABLE_GPU_SUPPORT=0\nHUB_MEM_LIMIT=1g\nHUB_PIDS_LIMIT=600\n")["hub"]
    # HUB_CPU_LIMIT's default of 2 is cut to the daemon's one CPU: Compose refuses more than there are
    assert (hub["mem_limit"], hub["cpus"], hub["pids_limit"]) == ("1G", 1.0, 600)


def test_every_service_and_every_lab_rotates_its_log(tmp_path):
    """Issue 25, part 8: unbounded json-file logs let one lab fill /var/lib/docker."""
    from hub_ext.labs.policy import Policy
    from hub_ext.labs.runtime import lab_runtime, log_options
    from hub_ext.naming import user_names
    from hub_ext.settings.hub import ConfigError, from_environ

    services = rendered_on_one_cpu(tmp_path, "ENABLE_GPU_SUPPORT=0\nLOG_MAX_SIZE=20M\nLOG_MAX_FILES=5\n")
    assert set(services) == {"hub", "proxy", "netguard"}
    for name, service in services.items():
        assert service["logging"] == {"driver": "json-file", "options": {"max-size": "20m", "max-file": "5"}}, name
    lab = lab_runtime(
        names=user_names("jupyterlab", "alice"),
        policy=Policy(pids_limit=64),
        shared_volume="s",
        logs=log_options("20m", 5),
    )
    assert lab.host_config["log_config"] == {"type": "json-file", "config": {"max-size": "20m", "max-file": "5"}}
    default = lab_runtime(
        names=user_names("jupyterlab", "alice"),
        policy=Policy(pids_limit=64),
        shared_volume="s",
    )
    assert default.host_config["log_config"]["config"] == {"max-size": "10m", "max-file": "3"}
    hub = from_environ({})
    assert (hub.log_max_size, hub.log_max_files) == ("10m", 3)
    assert from_environ({"LOG_MAX_SIZE": "1g", "LOG_MAX_FILES": "1"}).log_max_size == "1g"
    for env, message in [
        ({"LOG_MAX_SIZE": "10"}, "LOG_MAX_SIZE='10' is not a log size of at least 1m"),
        ({"LOG_MAX_SIZE": "lots"}, "is not a log size"),
        ({"LOG_MAX_FILES": "0"}, "LOG_MAX_FILES='0' is too small"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_environ(env)


class ReplacingDaemon:
    """A hub being replaced, as `docker ps` and `docker inspect` show it step by step: each container is (id, image,
    status, health), and each look at the hub takes the next step (the last one stays)."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.seen = 0

    def current(self):
        return self.steps[min(self.seen, len(self.steps)) - 1]

    def image_id(self, ref):
        return f"sha256:{ref}"

    def inspect_container(self, container):
        _, _, status, health = self.current()
        return {"State": {"Status": status, "Health": {"Status": health}}}

    def logs(self, container, tail):
        return "the hub's last lines"

    def containers(self, labels, all=True):
        return []  # no proxy of its own: the hub's container is the front


class ProxyDaemon(ReplacingDaemon):
    """A healthy hub, and a proxy container whose health goes through `proxy_steps`, one per look at it."""

    def __init__(self, proxy_steps):
        super().__init__([("hub", "h:1", "running", "healthy")])
        self.proxy_steps, self.proxy_seen = list(proxy_steps), 0

    def containers(self, labels, all=True):
        return [{"Id": "proxy", "State": "running"}] if labels.get(SERVICE) == "proxy" else []

    def inspect_container(self, container):
        if container != "proxy":
            return super().inspect_container(container)
        self.proxy_seen += 1
        health = self.proxy_steps[min(self.proxy_seen, len(self.proxy_steps)) - 1]
        return {"State": {"Status": "running", "Health": {"Status": health}}}


def test_waiting_for_the_hub_waits_for_its_proxy_too(tmp_path, monkeypatch):
    """The hub answers on its own before its proxy does: `up` returns only when the URL works."""
    monkeypatch.setattr("hubforge.deploy.engine.time.sleep", lambda seconds: None)
    options = StackOptions(project="p", run_dir=tmp_path, https_port=9443, http_port=9080)
    daemon = ProxyDaemon(["starting", "starting", "healthy"])
    said = []
    ReplacedHubStack(options, daemon, tmp_path, say=lambda message: None).wait_healthy(said.append)
    assert daemon.proxy_seen == 3
    assert said == ["waiting for the hub to become healthy (healthy; the proxy is not yet, 0s)"] * 2


class ReplacedHubStack(ComposeStack):
    def hub_container(self):
        self.docker.seen += 1
        step = self.docker.current()
        return step and {"Id": step[0], "Image": step[1], "ImageID": f"sha256:{step[1]}", "State": step[2]}


def replacing(tmp_path, steps) -> ReplacedHubStack:
    options = StackOptions(project="p", run_dir=tmp_path, https_port=9443, http_port=9080)
    return ReplacedHubStack(options, ReplacingDaemon(steps), tmp_path, say=lambda message: None)


SWARM_REPLACES_THE_HUB = [
    ("old", "h:1", "running", "healthy"),  # `stack deploy` has returned; the old hub still answers
    ("old", "h:1", "exited", "unhealthy"),  # stop-first: the old one goes before the new one is made
    None,
    ("new", "h:2", "created", "starting"),
    ("new", "h:2", "running", "starting"),
    ("new", "h:2", "running", "healthy"),
]


def test_waiting_for_the_hub_of_an_image_passes_over_the_hub_it_replaces(tmp_path, monkeypatch):
    monkeypatch.setattr("hubforge.deploy.engine.time.sleep", lambda seconds: None)
    stack, said = replacing(tmp_path, SWARM_REPLACES_THE_HUB), []
    stack.wait_healthy(said.append, image="h:2")
    assert stack.docker.seen == len(SWARM_REPLACES_THE_HUB)  # not before the new hub is healthy
    assert said[0] == "waiting for the hub of h:2 to run (0s)"
    # any hub will do without an image: the old one, healthy, at once
    stack = replacing(tmp_path, SWARM_REPLACES_THE_HUB)
    stack.wait_healthy(said.append)
    assert stack.docker.seen == 1


def test_a_hub_of_the_awaited_image_that_stops_fails_the_wait_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr("hubforge.deploy.engine.time.sleep", lambda seconds: None)
    stack = replacing(tmp_path, [("old", "h:1", "running", "healthy"), ("new", "h:2", "exited", "unhealthy")])
    with pytest.raises(HubforgeError, match="the hub stopped while starting"):
        stack.wait_healthy(lambda message: None, image="h:2")


def test_no_hub_of_the_awaited_image_within_the_timeout_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("hubforge.deploy.engine.time.sleep", lambda seconds: None)
    stack = replacing(tmp_path, [("old", "h:1", "running", "healthy")])
    with pytest.raises(HubforgeError, match="no hub of h:2 ran within 0s"):
        stack.wait_healthy(lambda message: None, timeout=0, image="h:2")


@pytest.mark.parametrize(("guarded", "hub", "ups"), [(True, True, 2), (True, False, 1), (False, True, 1)])
def test_compose_starts_the_guard_on_its_own_first_when_the_rendered_stack_has_one(
    tmp_path, monkeypatch, guarded, hub, ups
):
    calls = []
    monkeypatch.setattr("hubforge.deploy.compose.proc.run", lambda argv, what: calls.append(argv))
    options = StackOptions(project="p", run_dir=tmp_path, https_port=9443, http_port=9080)
    stack = ComposeStack(options, None, tmp_path, say=lambda message: None)
    monkeypatch.setattr(stack, "hub_container", lambda: {"Id": "h"} if hub else None)
    monkeypatch.setattr(stack, "proxy_container", lambda: {"Id": "p"})
    stack.start({"network_guard": guarded})
    assert len(calls) == ups and calls[-1][-3:] == ["up", "--detach", "--remove-orphans"]
    if ups == 2:
        assert calls[0][-1] == "netguard" and "--no-deps" in calls[0]


def test_a_stack_from_before_the_proxy_container_loses_its_hub_first(tmp_path, monkeypatch):
    """Its hub publishes the ports that the new proxy takes: Compose would make the proxy first and fail on them."""
    calls = []
    monkeypatch.setattr("hubforge.deploy.compose.proc.run", lambda argv, what: calls.append(argv))
    options = StackOptions(project="p", run_dir=tmp_path, https_port=9443, http_port=9080)
    stack = ComposeStack(options, None, tmp_path, say=lambda message: None)
    monkeypatch.setattr(stack, "hub_container", lambda: {"Id": "h"})
    monkeypatch.setattr(stack, "proxy_container", lambda: None)
    stack.start({"network_guard": False})
    assert len(calls) == 2 and calls[0][-4:] == ["rm", "--stop", "--force", "hub"]
    assert calls[1][-3:] == ["up", "--detach", "--remove-orphans"]
