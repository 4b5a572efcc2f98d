"""The monitoring profile on a live stack (issue 32, part 3): Prometheus scrapes the hub with the metrics token,
node-exporter and Alertmanager; its pages open to an admin through the hub's login and to nobody else; its rules
pass promtool in its own image; and when the hub stops, HubDown fires in Alertmanager within the rule's minute."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import docker
import pytest
import requests

from hub_ext.monitoring import service_host

from ..support.helpers import wait_until
from ..support.hubclient import KernelClient
from ..support.livestack import approved_user

pytestmark = pytest.mark.integration
INTERVAL = 2  # seconds between scrapes and rule evaluations
# Labs small enough to overfill in a cell; the activity collector reads their cgroups every 5 s
STACK_ENV = {"MONITORING": "1", "MONITORING_INTERVAL": str(INTERVAL), "LAB_MEM_LIMIT": "256M", "ACTIVITY_INTERVAL": "5"}


def service(live, name: str):
    return docker.from_env().containers.get(f"{live.project}-{name}-1")


def address(live, name: str) -> str:
    """A profile service's address on the stack network: the tests' way in, as no port of it is published."""
    container = service(live, name)
    return next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]


def pages(live) -> str:
    """Prometheus' pages as a browser reaches them: the hub's service `prometheus`, on its own subdomain."""
    parsed = urlparse(live.url)
    return f"https://{service_host('prometheus', parsed.hostname)}:{parsed.port}/services/prometheus/"


def query(live, session, expr: str) -> list[dict]:
    """An instant query, through the pages' proxy with the admin's login."""
    answer = session.http.get(pages(live) + "api/v1/query", params={"query": expr}, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    return answer.json()["data"]["result"]


def test_prometheus_scrapes_every_target_and_its_pages_open_to_admins_only(live, admin):
    graph = admin.http.get(pages(live) + "graph", timeout=30)
    assert graph.status_code == 200 and "Prometheus" in graph.text, graph.text[:300]
    bob, _ = approved_user(live, admin, "bob")
    refused = bob.http.get(pages(live) + "graph", timeout=30)
    assert refused.status_code == 403, (refused.url, refused.text[:300])
    anonymous = requests.get(pages(live) + "graph", verify=False, timeout=30, allow_redirects=False)
    assert anonymous.status_code == 302  # to the hub's login, never Prometheus' page

    def every_target_up() -> dict:
        found = {sample["metric"]["job"]: sample["value"][1] for sample in query(live, admin, "up")}
        return (
            found
            if set(found) == {"jupyterhub", "node", "alertmanager", "prometheus"} and set(found.values()) == {"1"}
            else {}
        )

    wait_until(every_target_up, timeout=60, what="every scrape target up")
    assert query(live, admin, "hubforge_tls_certificate_expiry_timestamp_seconds - time() > 14 * 86400")
    assert query(live, admin, 'node_filesystem_size_bytes{mountpoint="/"}')  # the host's root, through /host
    rules = admin.http.get(pages(live) + "api/v1/rules", timeout=30).json()["data"]["groups"]
    assert {rule["name"] for group in rules for rule in group["rules"]} >= {"HubDown", "CertificateExpiresSoon"}


def test_promtool_in_the_image_accepts_the_shipped_rules(live):
    code, output = service(live, "prometheus").exec_run(["promtool", "check", "rules", "/etc/prometheus/alerts.yml"])
    assert code == 0 and b"SUCCESS: 6 rules found" in output, output.decode()


def test_a_kernel_killed_for_memory_is_counted_and_alerted(live, admin):
    """A cell that takes more than the lab's limit: the kernel dies (the lab lives on), the hub counts the kill from the
    lab's cgroup, Prometheus has it, and LabKilledForMemory fires at once."""
    _, carol = approved_user(live, admin, "carol")
    carol.start("carol")
    kernel = KernelClient(carol, "carol")
    try:
        kernel.execute("x = bytearray(400 * 2**20)\nprint(len(x))", timeout=20)
    except Exception:  # noqa: BLE001 -- the kernel is killed under the cell: its answer never comes
        pass
    assert live.lab("carol").status == "running"  # a kernel is a child of the lab: only it was killed

    def counted() -> list:
        return query(live, admin, 'hubforge_lab_oom_kills_total{user="carol"} >= 1')

    wait_until(counted, timeout=30, what="carol's kill for memory in Prometheus", interval=1)

    def alerting() -> list:
        return query(live, admin, 'ALERTS{alertname="LabKilledForMemory", alertstate="firing", user="carol"}')

    wait_until(alerting, timeout=20, what="LabKilledForMemory firing", interval=1)


def test_hub_down_fires_in_alertmanager_within_the_rules_minute(live):
    """Last in this module: it stops the hub."""
    alertmanager = f"http://{address(live, 'alertmanager')}:9093/api/v2/alerts"
    assert not [a for a in requests.get(alertmanager, timeout=10).json() if a["labels"]["alertname"] == "HubDown"]
    live.hub().stop(timeout=20)
    stopped = time.monotonic()

    def hub_down() -> list:
        alerts = requests.get(alertmanager, params={"active": "true"}, timeout=10).json()
        return [a for a in alerts if a["labels"]["alertname"] == "HubDown" and a["status"]["state"] == "active"]

    fired = wait_until(hub_down, timeout=60 + 10 * INTERVAL + 15, what="HubDown active in Alertmanager", interval=2)
    waited = time.monotonic() - stopped
    print(f"HubDown active in Alertmanager {waited:.1f} s after the hub stopped")
    assert 60 <= waited, f"HubDown fired after {waited:.0f} s, before its `for: 1m`"
    assert fired[0]["labels"]["severity"] == "critical" and fired[0]["labels"]["job"] == "jupyterhub"
