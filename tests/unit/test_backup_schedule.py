"""Scheduled backups (issue 30, part 2): BACKUP_SCHEDULE and its slots, the retention's argv, the service's status
file and what `invoke status` and /hub/metrics make of it, and the backup service in the rendered stack."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from hub_ext.backup import plan, status
from hub_ext.backup.gateway import JobCalls
from hub_ext.backup.scheduler import Service, run_once
from hub_ext.settings.hub import from_environ
from hub_ext.settings.parse import ConfigError
from hub_ext.settings.schedule import Schedule, parse_schedule
from hub_ext.web.metrics import BackupGauges

from .test_stack import rendered_on_one_cpu

UTC = timezone.utc


@pytest.mark.parametrize(
    ("raw", "text", "said"),
    [
        ("", "off", "off"),
        ("OFF", "off", "off"),
        ("hourly", "every 1h", "every hour"),
        ("daily", "daily 00:00", "every day at 00:00 UTC"),
        ("daily 2:30", "daily 02:30", "every day at 02:30 UTC"),
        ("every 6h", "every 6h", "every 6 hours"),
        ("every  90m", "every 90m", "every 90 minutes"),
        ("every 120m", "every 2h", "every 2 hours"),
        ("every 15s", "every 15s", "every 15 seconds"),
        ("every 2d", "every 2d", "every 2 days"),
    ],
)
def test_a_schedule_reads_back_as_its_normal_text(raw, text, said):
    schedule = parse_schedule("BACKUP_SCHEDULE", raw)
    assert (schedule.text, schedule.describe()) == (text, said)
    assert parse_schedule("BACKUP_SCHEDULE", schedule.text) == schedule


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("weekly", "BACKUP_SCHEDULE='weekly' is not a schedule; use off, hourly, daily"),
        ("daily 24:00", "BACKUP_SCHEDULE='daily 24:00' is not a time of day"),
        ("daily 2:61", "is not a time of day"),
        ("every 5s", "BACKUP_SCHEDULE='every 5s' is too often; the shortest interval is every 10s"),
        ("every 0h", "is not a schedule"),
        ("every h", "is not a schedule"),
    ],
)
def test_a_bad_schedule_is_one_line_naming_the_setting(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_schedule("BACKUP_SCHEDULE", raw)
    with pytest.raises(ConfigError, match="BACKUP_SCHEDULE="):
        from_environ({"BACKUP_SCHEDULE": raw})


@pytest.mark.parametrize(
    ("raw", "now", "due"),
    [
        ("daily 02:30", "2026-12-07T01:00:00", "2026-12-07T02:30:00"),
        ("daily 02:30", "2026-12-07T02:30:00", "2026-12-08T02:30:00"),  # strictly after: not the slot just taken
        ("daily 02:30", "2026-12-31T23:59:00", "2027-01-01T02:30:00"),
        ("every 6h", "2026-12-07T05:59:59", "2026-12-07T06:00:00"),
        ("every 6h", "2026-12-07T18:00:00", "2026-12-08T00:00:00"),
        ("hourly", "2026-12-07T10:15:00", "2026-12-07T11:00:00"),
        ("every 15s", "2026-12-07T10:15:01", "2026-12-07T10:15:15"),
    ],
)
def test_the_next_slot_is_the_first_after_now_in_utc(raw, now, due):
    schedule = parse_schedule("BACKUP_SCHEDULE", raw)
    assert schedule.next_run(datetime.fromisoformat(now).replace(tzinfo=UTC)) == datetime.fromisoformat(due).replace(
        tzinfo=UTC
    )


def test_slots_are_in_utc_whatever_the_clocks_zone():
    from datetime import timedelta

    paris = timezone(timedelta(hours=1))
    due = parse_schedule("S", "daily 02:30").next_run(datetime(2026, 12, 7, 3, 0, tzinfo=paris))  # 02:00 UTC
    assert due == datetime(2026, 12, 7, 2, 30, tzinfo=UTC)
    assert Schedule().next_run(datetime.now(UTC)) is None


def test_the_settings_table_has_the_schedule_off_and_the_retention_by_default():
    hub = from_environ({})
    assert (hub.backup_schedule, hub.backup_keep_daily, hub.backup_keep_weekly, hub.backup_keep_monthly) == (
        "off",
        7,
        4,
        6,
    )
    assert from_environ({"BACKUP_SCHEDULE": "Daily 3:05"}).backup_schedule == "daily 03:05"
    with pytest.raises(ConfigError, match="BACKUP_KEEP_WEEKLY='-1' is too small; use an integer >= 0"):
        from_environ({"BACKUP_KEEP_WEEKLY": "-1"})


def test_the_retention_forgets_only_this_projects_snapshots():
    assert plan.forget_argv("p1", 7, 4, 0) == [
        "forget",
        "--json",
        "--tag",
        "project=p1",
        "--host",
        "p1",
        "--group-by",
        "host,paths",
        "--keep-tag",
        "upgrade",  # an upgrade's way back is never forgotten by the schedule
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
    ]
    assert plan.forget_argv("p1", 0, 0, 0) is None  # every rule off: nothing is forgotten


def test_what_restic_forgot_is_counted():
    answer = json.dumps(
        [{"host": "p1", "keep": [{"id": "a"}], "remove": [{"id": "b"}, {"id": "c"}]}, {"keep": [{"id": "d"}]}]
    )
    assert plan.forgotten(answer) == (2, 2)
    assert plan.forgotten("") == (0, 0)
    assert plan.forgotten("not json") == (0, 0)


SUMMARY = {"snapshot_id": "1a2b3c4d5e6f", "data_added": 2048, "total_duration": 1.2}
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()


def test_the_status_file_round_trips_and_keeps_the_other_outcome(tmp_path):
    path = tmp_path / "state" / "status.json"
    assert status.read(path) == {}
    document = status.succeeded({"schedule": "every 6 hours"}, NOON, SUMMARY, 1.94, 3, 1)
    document = status.failed(document, NOON + 60, "there is no backup repository at /x\nmore")
    status.write(path, document)
    again = status.read(path)
    assert again == document and not list(path.parent.glob("*.partial"))
    assert again["last_success"] == {
        "time": NOON,
        "snapshot": "1a2b3c4d",
        "seconds": 1.9,
        "added_bytes": 2048,
        "kept": 3,
        "forgotten": 1,
    }
    assert again["last_failure"] == {"time": NOON + 60, "reason": "there is no backup repository at /x"}
    path.write_text("{torn")
    assert status.read(path) == {}


def test_the_status_line_of_invoke_status():
    document = status.succeeded({"schedule": "every day at 02:30 UTC"}, NOON, SUMMARY, 1.94, 3, 0)
    assert status.line(document) == (
        "every day at 02:30 UTC; last success 2026-12-07 12:00 UTC (snapshot 1a2b3c4d, 1.9 s); last failure: none"
    )
    failed = status.failed({"schedule": "every 6 hours", "next_run": NOON}, NOON, "restic failed: boom")
    assert status.line(failed) == (
        "every 6 hours; no success yet; last failure 2026-12-07 12:00 UTC: restic failed: boom; "
        "next 2026-12-07 12:00 UTC"
    )


def scrape(path: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(BackupGauges(path))
    lines = generate_latest(registry).decode().splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("hubforge_backup_")}


def test_the_metrics_follow_the_status_file_at_each_scrape(tmp_path):
    path = tmp_path / "status.json"
    assert scrape(path) == {
        "hubforge_backup_last_success_timestamp_seconds": 0.0,  # never: an alert on its age fires
        "hubforge_backup_last_failure_timestamp_seconds": 0.0,
        "hubforge_backup_last_duration_seconds": 0.0,
        "hubforge_backup_last_added_bytes": 0.0,
        "hubforge_backup_next_run_timestamp_seconds": 0.0,
    }
    status.write(path, status.succeeded({"next_run": NOON + 3600}, NOON, SUMMARY, 1.94, 1, 0))
    scraped = scrape(path)
    assert scraped["hubforge_backup_last_success_timestamp_seconds"] == NOON
    assert scraped["hubforge_backup_last_duration_seconds"] == 1.9
    assert scraped["hubforge_backup_last_added_bytes"] == 2048
    assert scraped["hubforge_backup_next_run_timestamp_seconds"] == NOON + 3600


class RefusingDocker(JobCalls):
    """A daemon that has the service's volume but refuses every container (as for an image that is not there)."""

    def volume(self, name):
        return {"Name": name, "Mountpoint": f"/var/lib/docker/volumes/{name}/_data"}

    def containers(self, labels, all=True):
        return []

    def volumes(self, labels):
        return []

    def run_streamed(self, image, command, host, labels, environment, user=None, on_line=lambda line: None, files=None):
        return None, "", f"No such image: {image}"


SERVICE = Service(
    "p1", "compose", "hubforge/backup:k", "0.9.0", "/srv/repo", "/srv/pw", "/srv/run", "p1_backup-state",
    parse_schedule("S", "every 1h"), (7, 4, 6),
)  # fmt: skip


def test_a_failed_run_is_recorded_with_its_reason_and_the_last_success_kept():
    before = status.succeeded({"schedule": "every hour"}, NOON, SUMMARY, 1.0, 1, 0)
    after = run_once(SERVICE, RefusingDocker(), before)
    assert after["last_success"] == before["last_success"]
    assert after["last_failure"]["reason"] == "Docker refused the backup container: No such image: hubforge/backup:k"


def test_the_service_reads_what_up_rendered():
    rendered = {
        "project": "p1",
        "engine": "compose",
        "image": "hubforge/backup:k",
        "version": "0.9.0",
        "repository": "/srv/repo",
        "password_file": "/srv/pw",
        "run_dir": "/srv/run",
        "state_volume": "p1_backup-state",
        "schedule": "every 1h",
        "keep": {"daily": 7, "weekly": 4, "monthly": 6},
    }
    assert Service.from_json(json.dumps(rendered)) == SERVICE


def test_the_backup_service_is_in_the_stack_only_with_a_schedule(tmp_path):
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    off = rendered_on_one_cpu(tmp_path / "off", "ENABLE_GPU_SUPPORT=0\n")
    assert "backup" not in off and not any(v.startswith("backup-state") for v in off["hub"]["volumes"])
    keep = tmp_path / "kept"
    on = rendered_on_one_cpu(
        tmp_path / "on", f"ENABLE_GPU_SUPPORT=0\nBACKUP_SCHEDULE=daily 02:30\nBACKUP_REPOSITORY={keep}/repo\n"
    )
    service = on["backup"]
    assert service["command"] == ["python3", "-m", "hub_ext.backup.scheduler"]
    assert (service["user"], service["read_only"], service["cap_drop"], service["network_mode"]) == (
        "1000:1000",
        True,
        ["ALL"],
        "none",
    )
    assert "backup-state:/srv/jupyterhub/backups:ro" in on["hub"]["volumes"]
    given = json.loads(service["environment"]["HUBFORGE_BACKUP"])
    run_dir = tmp_path / "on" / "run"
    assert given["schedule"] == "daily 02:30" and given["image"] == "b:1" and given["state_volume"] == "p_backup-state"
    assert given["repository"] == f"{keep}/repo" and (keep / "repo").is_dir()  # made at `up`, private
    assert given["password_file"] == str(run_dir / "backup-password")  # made at `up` at its default place
    assert (run_dir / "backup-password").stat().st_mode & 0o777 == 0o600
    assert json.loads((run_dir / "stack.json").read_text())["backups"] == {"schedule": "every day at 02:30 UTC"}


def test_the_health_check_wants_a_status_and_no_backup_running_for_hours():
    assert status.problem({}, NOON) == "the backup service has written no status yet"
    assert status.problem({"next_run": NOON + 60}, NOON) is None
    assert status.problem({"next_run": NOON - 3600}, NOON) is None  # a backup of an hour is running
    assert status.problem({"next_run": NOON - 7 * 3600}, NOON) == (
        "the backup of the slot at 2026-12-07 05:00 UTC is still running"
    )
