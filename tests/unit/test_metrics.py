"""hub_ext's Prometheus counters, and the Grafana dashboard that reads them with JupyterHub's own metrics."""

from __future__ import annotations

import json
from pathlib import Path

import jupyterhub.metrics  # noqa: F401 -- registers JupyterHub's metrics, as in the hub
import pytest
from prometheus_client import REGISTRY

from hub_ext.web import metrics

from ..support.helpers import dashboard_metric_families, metric_family

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
