"""hub_ext's Prometheus counters, and the Grafana dashboard that reads them with JupyterHub's own metrics."""

from __future__ import annotations

import json
from pathlib import Path

import jupyterhub.metrics  # noqa: F401 -- registers JupyterHub's metrics, as in the hub
import pytest
from prometheus_client import REGISTRY

from hub_ext.web import metrics

from ..support.helpers import dashboard_metric_families, dashboard_selections, metric_family

DASHBOARD = Path(__file__).resolve().parents[2] / "stack" / "grafana" / "hubforge.json"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_restart_counts_its_result_and_duration():
    before = (
        sample("hubforge_server_restarts_total", result="restarted"),
        sample("hubforge_server_restart_duration_seconds_count"),
    )
    metrics.count_restart({"status": "restarted", "container": "c", "seconds": 1.5})
    assert sample("hubforge_server_restarts_total", result="restarted") == before[0] + 1
    assert sample("hubforge_server_restart_duration_seconds_count") == before[1] + 1


def test_a_refused_or_failed_restart_observes_no_duration():
    duration = sample("hubforge_server_restart_duration_seconds_count")
    refused, failed = (
        sample("hubforge_server_restarts_total", result="refused"),
        sample("hubforge_server_restarts_total", result="failed"),
    )
    metrics.count_restart(None)
    metrics.count_restart({"status": "failed", "container": "c", "reason": "gone"})
    assert sample("hubforge_server_restarts_total", result="refused") == refused + 1
    assert sample("hubforge_server_restarts_total", result="failed") == failed + 1
    assert sample("hubforge_server_restart_duration_seconds_count") == duration


def test_volume_resets_and_deliveries_count_each_outcome():
    removed = sample("hubforge_volume_resets_total", volume="cache", result="removed")
    missing = sample("hubforge_volume_resets_total", volume="home", result="not found")
    metrics.count_volume_resets({"cache": {"result": "removed"}, "home": {"result": "not found"}})
    assert sample("hubforge_volume_resets_total", volume="cache", result="removed") == removed + 1
    assert sample("hubforge_volume_resets_total", volume="home", result="not found") == missing + 1
    delivered, failed = (
        sample("hubforge_broadcast_deliveries_total", result="delivered"),
        sample("hubforge_broadcast_deliveries_total", result="failed"),
    )
    metrics.count_deliveries([{"result": "delivered"}, {"result": "delivered"}, {"result": "failed"}])
    assert sample("hubforge_broadcast_deliveries_total", result="delivered") == delivered + 2
    assert sample("hubforge_broadcast_deliveries_total", result="failed") == failed + 1


@pytest.mark.parametrize(
    ("name", "family"), [("a_bucket", "a"), ("a_total", "a"), ("a_seconds_count", "a_seconds"), ("a", "a")]
)
def test_metric_family(name, family):
    assert metric_family(name) == family


def test_the_dashboard_queries_only_metrics_the_hub_registers():
    registered = {metric_family(m.name) for m in REGISTRY.collect()}
    used = dashboard_metric_families(DASHBOARD)
    assert {
        "jupyterhub_server_spawn_duration_seconds",
        "hubforge_server_restarts",
        "process_resident_memory_bytes",
    } <= used
    assert used <= registered, f"the dashboard queries unknown metrics: {sorted(used - registered)}"


TARGET_LABELS = {"job", "instance"}  # what Prometheus adds to every scraped series
SUFFIXES = {"counter": {"_total", "_created"}, "histogram": {"_bucket", "_count", "_sum", "_created"}}


def registered_metrics() -> dict[str, tuple[str, set[str] | None]]:
    """family -> (type, label names) of every metric the hub registers (JupyterHub's and hub_ext's); None where the
    collector does not say (the process collector's, which have none, and custom collectors with no sample yet)."""
    from tests.unit.test_monitoring import metrics  # noqa: F401 -- hub_ext's collectors, registered at import

    found: dict[str, tuple[str, set[str] | None]] = {}
    for collector in list(REGISTRY._collector_to_names):
        labels = getattr(collector, "_labelnames", None)
        for family in collector.collect():
            seen = {label for sample in family.samples for label in sample.labels} - {"le", "quantile"}
            found[family.name] = (family.type, set(labels) if labels is not None else (seen or None))
    return found


def test_every_dashboard_selection_names_a_registered_sample_and_its_labels():
    """Not only the family: a _bucket of a histogram, a _total of a counter, and only labels the metric has."""
    registered = registered_metrics()
    problems = []
    for title, name, labels in dashboard_selections(DASHBOARD):
        family = metric_family(name)
        if family not in registered and name in registered:
            family = name  # a gauge whose own name ends like a suffix
        if family not in registered:
            problems.append(f"{title}: {name} is not a metric the hub registers")
            continue
        kind, label_names = registered[family]
        suffix = name[len(family) :]
        if suffix == "_bucket":
            labels = labels - {"le"}  # histogram_quantile's grouping
        if suffix and suffix not in SUFFIXES.get(kind, set()):
            problems.append(f"{title}: {name} is not a sample of the {kind} {family}")
        if label_names is not None and not labels <= label_names | TARGET_LABELS:
            problems.append(f"{title}: {name} has no label {sorted(labels - label_names - TARGET_LABELS)}")
    assert problems == []


def test_the_selection_check_finds_a_wrong_suffix_and_a_wrong_label(tmp_path):
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        json.dumps(
            {
                "panels": [
                    {"title": "a", "targets": [{"expr": 'sum by (user) (jupyterhub_running_servers_total{job="x"})'}]},
                ]
            }
        )
    )
    assert dashboard_selections(wrong) == [("a", "jupyterhub_running_servers_total", {"job", "user"})]
    registered = registered_metrics()
    kind, labels = registered["jupyterhub_running_servers"]
    assert kind == "gauge" and "_total" not in SUFFIXES.get(kind, set()) and "user" not in (labels or set())


def test_the_dashboard_is_importable_grafana_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "hubforge"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "job"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        covered = {(box["x"] + dx, box["y"] + dy) for dx in range(box["w"]) for dy in range(box["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
            assert all('job=~"$job"' in target["expr"] for target in panel["targets"]), panel["title"]
