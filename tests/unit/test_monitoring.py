"""The monitoring profile: its settings and rendered services, Prometheus' configuration, the alert rules against the
metrics that exist, and the hub's own new metrics (labs' CPU, memory and kills for memory; the certificate's expiry)."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import jupyterhub.metrics  # noqa: F401 -- registers JupyterHub's metrics, as in the hub
import pytest
import yaml
from jupyterhub.utils import subdomain_hook_idna
from prometheus_client import REGISTRY

from hub_ext.hub import activity, cgroups
from hub_ext.hub.tls import ensure_self_signed
from hub_ext.monitoring import service_host
from hub_ext.settings.hub import ConfigError, from_environ
from hub_ext.web import metrics
from hubforge.deploy import ComposeStack, StackOptions
from hubforge.deploy.monitoring import prometheus_config, write_files
from hubforge.errors import HubforgeError

from ..support.helpers import metric_family
from .test_stack import OneCpuDaemon

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "stack" / "monitoring" / "alerts.yml"
IMAGES = {"hub": "h:1", "gpu-probe": "g:1", "backup": "b:1", "monitoring": "m:1"}
PROFILE = ("prometheus", "alertmanager", "node-exporter")


def rendered(tmp_path: Path, env: str, flag: bool = False, images: dict | None = None) -> dict:
    """compose.yml's services as `invoke up [--monitoring]` renders them for .env `env`."""
    socket_file = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_file))
    options = StackOptions(
        project="p",
        run_dir=tmp_path / "run",
        https_port=9443,
        http_port=9080,
        docker_socket=str(socket_file),
        monitoring=flag,
    )
    options.run_dir.mkdir(exist_ok=True)
    (options.run_dir / ".env").write_text("ENABLE_GPU_SUPPORT=0\nJUPYTERHUB_METRICS_TOKEN=scrape-me\n" + env)
    try:
        ComposeStack(options, OneCpuDaemon(), ROOT, say=lambda message: None).prepare(
            images or IMAGES, {"default": "l:1"}
        )
        return yaml.safe_load((options.run_dir / "compose.yml").read_text())
    finally:
        listener.close()
        socket_file.unlink()


def test_the_settings_default_to_off_and_refuse_bad_values_in_one_line():
    hub = from_environ({})
    assert (hub.monitoring, hub.monitoring_interval, hub.monitoring_retention) == (False, 15, "15d")
    assert from_environ({"MONITORING": "1", "MONITORING_INTERVAL": "2"}).monitoring_interval == 2
    for env, message in [
        ({"MONITORING": "maybe"}, "MONITORING='maybe' is not valid; use 1 or 0"),
        ({"MONITORING_INTERVAL": "0"}, "MONITORING_INTERVAL='0' is too small"),
        ({"MONITORING_RETENTION": "5 days"}, "MONITORING_RETENTION='5 days' is not valid; use a number and h, d"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            from_environ(env)


def test_off_by_default_the_stack_has_no_monitoring_service(tmp_path):
    stack = rendered(tmp_path, "")
    assert not set(PROFILE) & set(stack["services"])
    assert "MONITORING" not in stack["services"]["hub"]["environment"]
    assert not (tmp_path / "run" / "monitoring").exists()


@pytest.mark.parametrize(("env", "flag"), [("MONITORING=1\n", False), ("", True)])
def test_the_setting_or_the_flag_adds_three_hardened_unpublished_services(tmp_path, env, flag):
    stack = rendered(tmp_path, env, flag)
    services = stack["services"]
    assert set(PROFILE) <= set(services)
    assert services["hub"]["environment"]["MONITORING"] == "1"  # the hub runs the pages' proxy
    for name in PROFILE:
        service = services[name]
        assert service["image"] == "m:1", name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["user"] == "65532:65532" and service["mem_limit"] and service["pids_limit"], name
        assert "ports" not in service and "network_mode" not in service, name  # reached on the stack network only
        assert service["labels"]["hubforge.project"] == "p" and service["labels"]["hubforge.role"] == name, name
    for volume in ("prometheus-data", "alertmanager-data"):
        assert stack["volumes"][volume]["labels"] == {"hubforge.project": "p"}
    assert "/:/host:ro" in services["node-exporter"]["volumes"]
    state = json.loads((tmp_path / "run" / "stack.json").read_text())
    assert state["prometheus"] == "https://prometheus--service.hub.localhost:9443/services/prometheus/"
    command = services["prometheus"]["command"]
    assert "--web.route-prefix=/services/prometheus/" in command
    assert "--web.external-url=https://prometheus--service.hub.localhost:9443/services/prometheus/" in command


def test_a_change_to_the_rules_changes_the_services_digest(tmp_path):
    before = rendered(tmp_path, "MONITORING=1\n")["services"]["prometheus"]["labels"]["hubforge.config-digest"]
    (tmp_path / "run" / "monitoring" / "rules.d" / "mine.yml").write_text("groups: []\n")
    after = rendered(tmp_path, "MONITORING=1\n")["services"]["prometheus"]["labels"]["hubforge.config-digest"]
    assert before != after


def test_without_its_image_or_on_swarm_the_profile_says_why(tmp_path):
    with pytest.raises(HubforgeError, match=r"no monitoring image; run `invoke build --target monitoring`"):
        rendered(tmp_path, "MONITORING=1\n", images={k: v for k, v in IMAGES.items() if k != "monitoring"})


def test_prometheus_scrapes_the_hub_with_the_token_file_and_sends_alerts(tmp_path):
    config = prometheus_config("/jhub/", 5)
    assert config["global"]["scrape_interval"] == "5s" and config["global"]["evaluation_interval"] == "5s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["jupyterhub"]["metrics_path"] == "/jhub/hub/metrics"
    assert jobs["jupyterhub"]["static_configs"] == [{"targets": ["hub:8081"]}]
    assert jobs["jupyterhub"]["authorization"]["credentials_file"] == "/etc/prometheus/metrics-token"
    assert jobs["prometheus"]["metrics_path"] == "/jhub/services/prometheus/metrics"
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [{"targets": ["alertmanager:9093"]}]


def test_the_files_keep_the_operators_alertmanager_config_and_hide_the_token(tmp_path):
    write_files(ROOT, tmp_path, "/", 15, "scrape-me")
    folder = tmp_path / "monitoring"
    assert (folder / "metrics-token").read_text() == "scrape-me"
    assert (folder / "metrics-token").stat().st_mode & 0o777 == 0o400
    (folder / "alertmanager.yml").write_text("# mine\n")
    write_files(ROOT, tmp_path, "/", 15, "scrape-again")
    assert (folder / "alertmanager.yml").read_text() == "# mine\n"
    assert (folder / "metrics-token").read_text() == "scrape-again"
    assert (folder / "alerts.yml").read_bytes() == ALERTS.read_bytes()
    with pytest.raises(HubforgeError, match="JUPYTERHUB_METRICS_TOKEN is empty"):
        write_files(ROOT, tmp_path, "/", 15, "")


def test_the_service_host_is_jupyterhubs_own():
    assert service_host("prometheus", "hub.example.org") == subdomain_hook_idna(
        "prometheus", "hub.example.org", "service"
    )


# -- the alert rules -------------------------------------------------------------------------------------------------
RULE_WORDS = {"by", "on", "without", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
FUNCTION = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\(")
NAME = re.compile(r"(?<![\w\"$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w\"(])")


def metric_names(expr: str) -> set[str]:
    """The series an expression selects: its identifiers, less functions, keywords, label names and durations."""
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_groupings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    functions = set(FUNCTION.findall(without_ranges))
    return {n for n in NAME.findall(without_ranges) if n not in functions and n not in RULE_WORDS}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_the_rules_are_the_issues_six_alerts():
    assert [rule["alert"] for rule in rules()] == [
        "HubDown",
        "SpawnFailureRate",
        "LabKilledForMemory",
        "DiskAlmostFull",
        "CertificateExpiresSoon",
        "NoBackupFor2Days",
    ]
    assert {rule["alert"]: rule.get("for") for rule in rules()}["HubDown"] == "1m"


def test_metric_names_finds_only_series():
    assert metric_names('sum by (le) (rate(a_b_bucket{job="x"}[5m])) / c > 0.2 * 86400') == {"a_b_bucket", "c"}


def test_every_hub_metric_the_rules_read_is_registered(tmp_path):
    """The hub's series must be ones the hub registers (the backup gauges with BACKUP_SCHEDULE on); the others come
    from node-exporter (node_*) or are Prometheus' own (`up`)."""
    metrics.watch_backups(tmp_path / "status.json")
    registered = {metric_family(m.name) for m in REGISTRY.collect()}
    used = {name for rule in rules() for name in metric_names(rule["expr"])}
    assert "hubforge_tls_certificate_expiry_timestamp_seconds" in used and "hubforge_lab_oom_kills_total" in used
    hub_side = {n for n in used if not n.startswith("node_") and n != "up"}
    assert {metric_family(n) for n in hub_side} <= registered, sorted(hub_side)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on this host: tests/images checks the rules")
def test_promtool_accepts_the_rules():
    checked = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the hub's new metrics -------------------------------------------------------------------------------------------
def cgroup_v2(folder: Path, memory: int, oom_kills: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (folder / "memory.current").write_text(f"{memory}\n")
    (folder / "memory.stat").write_text("inactive_file 0\n")
    (folder / "memory.max").write_text("1073741824\n")
    (folder / "memory.events").write_text(f"low 0\nhigh 0\nmax 3\noom 2\noom_kill {oom_kills}\noom_group_kill 0\n")
    return folder


def test_kills_for_memory_are_read_from_both_cgroup_versions(tmp_path):
    cgroup_v2(tmp_path / "system.slice" / f"docker-{'a' * 64}.scope", 1000, 2)
    assert cgroups.read(tmp_path, "a" * 64).oom_kills == 2
    v1 = tmp_path / "v1"
    for folder, files in {
        v1 / "cpuacct" / "docker" / ("b" * 64): {"cpuacct.usage": "5"},
        v1 / "memory" / "docker" / ("b" * 64): {
            "memory.usage_in_bytes": "100",
            "memory.stat": "total_inactive_file 0\n",
            "memory.limit_in_bytes": "200",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
        },
    }.items():
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    assert cgroups.read(v1, "b" * 64).oom_kills == 4


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_labs_figures_and_kills_are_served_and_kills_survive_a_new_container(tmp_path):
    collector = activity.Collector(5, tmp_path)
    metrics.watch_labs(collector)
    first, second = "c" * 64, "d" * 64
    folder = cgroup_v2(tmp_path / "docker" / first, 300 * 2**20, 1)
    collector.observe({"alice": activity.Lab("alice", first, "lab", 0)}, 1000.0)
    assert sample("hubforge_lab_memory_bytes", user="alice") == 300 * 2**20
    assert sample("hubforge_lab_memory_limit_bytes", user="alice") == 2**30
    assert sample("hubforge_lab_cpu_seconds_total", user="alice") == 2.5
    assert sample("hubforge_lab_oom_kills_total", user="alice") == 1
    cgroup_v2(folder, 300 * 2**20, 3)  # two more kernels killed
    collector.observe({"alice": activity.Lab("alice", first, "lab", 0)}, 1005.0)
    assert sample("hubforge_lab_oom_kills_total", user="alice") == 3
    cgroup_v2(tmp_path / "docker" / second, 10, 1)  # the lab restarted: a new container, its own count from 0
    collector.observe({"alice": activity.Lab("alice", second, "lab", 0)}, 1010.0)
    assert sample("hubforge_lab_oom_kills_total", user="alice") == 4
    collector.observe({}, 1015.0)  # stopped: no figures now, but the count stays
    assert sample("hubforge_lab_memory_bytes", user="alice") is None
    assert sample("hubforge_lab_oom_kills_total", user="alice") == 4


def test_the_certificates_expiry_is_served_and_absent_without_a_certificate(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    metrics.watch_certificate(cert)
    assert sample("hubforge_tls_certificate_expiry_timestamp_seconds") is None
    ensure_self_signed(cert, key, ["hub.localhost"])
    expiry = sample("hubforge_tls_certificate_expiry_timestamp_seconds")
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    assert expiry is not None and expiry > now + 300 * 86400  # hubforge's self-signed certificates last years
