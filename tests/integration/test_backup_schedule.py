"""Scheduled backups on a live compose stack (issue 30, part 2): with BACKUP_SCHEDULE on, the stack's backup service
takes snapshots by itself, applies the retention, and its outcome moves the gauges of /hub/metrics and shows in
`invoke status`; a failure is recorded with its reason, and the next slot succeeds again."""

from __future__ import annotations

import json
import re
import time

import pytest

from ..support.helpers import wait_until
from ..support.livestack import ROOT, run_invoke, start_stack, stop_stack

pytestmark = pytest.mark.integration
SUCCESS = "hubforge_backup_last_success_timestamp_seconds"
FAILURE = "hubforge_backup_last_failure_timestamp_seconds"
PASSWORD = "a-backup-password-for-the-tests\n"


@pytest.fixture(scope="module")
def live(tmp_path_factory, request):
    """A stack whose backup service runs every 10 s (the shortest allowed) and keeps one snapshot a day: each slot
    after the first forgets the one before."""
    keep = tmp_path_factory.mktemp("kept")
    (keep / "password").write_text(PASSWORD)
    (keep / "password").chmod(0o600)
    env = {
        "BACKUP_SCHEDULE": "every 10s",
        "BACKUP_KEEP_DAILY": "1",
        "BACKUP_KEEP_WEEKLY": "0",
        "BACKUP_KEEP_MONTHLY": "0",
        "BACKUP_REPOSITORY": str(keep / "repository"),
        "BACKUP_PASSWORD_FILE": str(keep / "password"),
    }
    stack = start_stack(tmp_path_factory.mktemp("stack"), env)
    stack.password_file = keep / "password"
    yield stack
    if getattr(request.session, "stack_failed", False):
        stack.dump_logs(ROOT / "test-results" / "logs" / stack.project)
    stop_stack(stack)


def status_of(live) -> dict:
    shown = run_invoke(live, "status", "--json", timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return json.loads(shown.stdout)["backups"]


def test_a_scheduled_backup_runs_by_itself_and_its_metric_moves(live):
    since = time.time()
    assert live.metric(SUCCESS) < since  # 0 (none yet), or one taken while the hub was starting
    wait_until(lambda: live.metric(SUCCESS) > since, 60, "a scheduled backup after the stack started")
    assert live.metric(FAILURE) == 0 and live.metric("hubforge_backup_next_run_timestamp_seconds") > since
    listed = run_invoke(live, "backup", "--list", timeout=120)
    assert listed.returncode == 0 and len(snapshot_rows(listed.stdout)) >= 1, listed.stdout + listed.stderr
    shown = run_invoke(live, "status", timeout=60)
    assert "backups: every 10 seconds; last success 20" in shown.stdout and "last failure: none" in shown.stdout
    # the retention (one a day): a second slot forgets the first, and the repository keeps one snapshot
    wait_until(lambda: status_of(live)["last_success"]["forgotten"] >= 1, 60, "a backup whose retention forgot one")
    listed = run_invoke(live, "backup", "--list", timeout=120)
    assert len(snapshot_rows(listed.stdout)) == 1, listed.stdout


def test_a_failure_is_recorded_with_its_reason_and_the_next_slot_succeeds(live):
    try:
        live.password_file.write_text("not the password\n")
        wait_until(lambda: live.metric(FAILURE) > 0, 60, "a failed scheduled backup")
        failure = status_of(live)["last_failure"]
        assert "does not open the repository" in failure["reason"], failure
    finally:
        live.password_file.write_text(PASSWORD)
    failed_at = live.metric(FAILURE)
    wait_until(lambda: live.metric(SUCCESS) > failed_at, 60, "a success at the slot after the failure")
    services = {s["service"]: s["state"] for s in live.stack.status()["services"]}
    assert services["backup"] == "running"  # it never stopped for the failure


def snapshot_rows(text: str) -> list[str]:
    """The snapshots' rows of `invoke backup --list`."""
    return re.findall(r"[0-9a-f]{8}\W+20\d\d-", text)
