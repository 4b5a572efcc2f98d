"""The Activity page's API on a live stack (issue 29, part 2): a user's lab that burns CPU shows up running, with its
image, CPU, memory and groups, within an interval or two of the hub's collector; the CSV has the row; the usage report
counts it; a user sees their own figures and nothing else."""

from __future__ import annotations

import csv
import io

import pytest

from ..support.helpers import wait_until
from ..support.livestack import approved_user

pytestmark = pytest.mark.integration
STACK_ENV = {"ACTIVITY_INTERVAL": "5"}
BUSY = "import time\nend = time.time() + 40\nwhile time.time() < end:\n    pass\n"


def activity(api, **query) -> dict:
    answer = api.request("GET", "hub/api/hubforge/activity", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()


def usage_rows(api) -> list[dict]:
    answer = api.request("GET", "hub/api/hubforge/usage", params={"by": "user"})
    return answer.json()["rows"] if answer.status_code == 200 else []


def stored_cpu_seconds(live, user: str) -> float:
    """The user's CPU seconds in the hub's hourly table, read in the hub's container."""
    script = (
        "import sqlite3; db = sqlite3.connect('/srv/jupyterhub/data/jupyterhub.sqlite'); "
        f"print(db.execute('SELECT coalesce(sum(cpu_seconds), 0) FROM hubforge_usage_hourly WHERE user = ?', "
        f"({user!r},)).fetchone()[0])"
    )
    code, out = live.hub().exec_run(["python3", "-c", script])
    assert code == 0, out.decode()
    return float(out.decode().strip())


def row_of(api, name: str) -> dict:
    return next(row for row in activity(api)["users"] if row["name"] == name)


def test_a_busy_lab_shows_with_its_figures_and_a_user_sees_only_their_own(live, admin, admin_api):
    _, ann_api = approved_user(live, admin, "ann")
    assert admin_api.request("POST", "hub/api/groups/physics").status_code in (201, 409)
    assert admin_api.request("POST", "hub/api/groups/physics/users", json={"users": ["ann"]}).status_code == 200
    assert row_of(admin_api, "ann")["running"] is False

    ann_api.start("ann")
    live.lab("ann").exec_run(["python3", "-c", BUSY], detach=True)
    busy = wait_until(
        lambda: (row := row_of(admin_api, "ann"))["cpu_percent"] is not None and row["cpu_percent"] > 20 and row,
        timeout=40,
        what="ann's busy lab to show more than 20 % CPU",
    )
    assert busy["running"] and busy["image"] and busy["node"] and busy["groups"] == ["physics"]
    assert busy["memory_bytes"] > 1 << 20 and busy["memory_limit"] and busy["series"]
    assert activity(admin_api)["collector"]["started"] is True
    assert [row["name"] for row in activity(admin_api, running="1")["users"]] == ["ann"]

    exported = admin_api.request("GET", "hub/api/hubforge/activity", params={"format": "csv"})
    assert exported.headers["Content-Type"].startswith("text/csv")
    (ann,) = [row for row in csv.DictReader(io.StringIO(exported.text)) if row["user"] == "ann"]
    assert ann["running"] == "1" and float(ann["cpu_percent"]) >= 0 and ann["groups"] == "physics"

    by_user = admin_api.request("GET", "hub/api/hubforge/usage", params={"by": "user"}).json()["rows"]
    assert next(row for row in by_user if row["name"] == "ann")["cpu_hours"] > 0  # the hour under way, not yet written
    by_group = admin_api.request("GET", "hub/api/hubforge/usage", params={"by": "group", "format": "csv"})
    assert "physics," in by_group.text

    # ann: her own figures, not the admins' page or report
    assert ann_api.request("GET", "hub/api/hubforge/activity").status_code == 403
    assert ann_api.request("GET", "hub/api/hubforge/usage").status_code == 403
    mine = ann_api.request("GET", "hub/api/hubforge/activity/me").json()
    assert mine["user"]["name"] == "ann" and mine["user"]["running"] and mine["week"]["cpu_hours"] > 0


def test_the_hour_under_way_is_written_when_the_hub_stops(live, admin_api):
    """After the first test: ann's figures of this hour are in the collector's memory only, until the hub stops."""
    before = next(row for row in usage_rows(admin_api) if row["name"] == "ann")["cpu_hours"]
    assert before > 0 and not stored_cpu_seconds(live, "ann")
    live.hub().restart(timeout=30)
    wait_until(lambda: usage_rows(admin_api), timeout=90, what="the restarted hub's usage report")
    # The report rounds to 4 decimals of an hour, so it may overstate the figure by up to half of 0.0001 hour (0.18 s).
    assert stored_cpu_seconds(live, "ann") >= (before - 0.00005) * 3600


def test_bad_report_arguments_answer_400_with_one_line(admin_api, admin):
    for query, said in (
        ({"by": "team"}, "by='team' is not a grouping"),
        ({"since": "yesterday"}, "since='yesterday' is not a time"),
        ({"since": "2026-12-02T00:00", "until": "2026-12-01T00:00"}, "is not before until"),
        ({"format": "xml"}, "format='xml' is not a format"),
    ):
        answer = admin_api.request("GET", "hub/api/hubforge/usage", params=query)
        assert answer.status_code == 400 and said in answer.json()["message"], answer.text
    page = admin.http.get(admin.url("hub/hubforge/activity"), timeout=30)
    assert page.status_code == 200 and 'id="activity-rows"' in page.text and "hubforge/activity" in page.text
