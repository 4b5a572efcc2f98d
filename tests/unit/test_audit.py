"""The audit trail's store (issue 29, part 3): records in the hub's database and as JSON lines; filter, CSV, prune."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import pytest

from hub_ext.auth.audit import Query, ensure_table, find, prune, record, to_csv

T0 = datetime(2026, 12, 1, 12, 0)


@pytest.fixture
def audit_db(db):
    ensure_table(db)
    ensure_table(db)  # twice: the hub does it at every start
    return db


def test_a_record_goes_to_the_database_and_to_the_log_as_one_json_line(audit_db, caplog):
    with caplog.at_level(logging.INFO, logger="JupyterHub.audit"):
        record(audit_db, "admin", "approve", "ann", "192.0.2.7", {"approved": True}, at=T0)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "JupyterHub.audit"]
    assert json.loads(line) == {
        "id": 1,
        "at": "2026-12-01T12:00:00+00:00",
        "actor": "admin",
        "action": "approve",
        "subject": "ann",
        "address": "192.0.2.7",
        "detail": {"approved": True},
    }
    with pytest.raises(ValueError, match="audit action 'approved' is not one of"):
        record(audit_db, "admin", "approved", "ann")


def test_filter_by_user_action_and_time_newest_first_and_export_csv(audit_db):
    record(audit_db, "-", "login-failed", "ann", "198.51.100.2", at=T0)
    record(audit_db, "admin", "password-reset", "ann", at=T0 + timedelta(hours=1))
    record(audit_db, "bob", "volume-reset", "bob", at=T0 + timedelta(hours=2))
    assert [r.action for r in find(audit_db, Query(user="ann"))] == ["password-reset", "login-failed"]
    assert [r.subject for r in find(audit_db, Query(action="volume-reset"))] == ["bob"]
    window = Query(since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=2))
    assert [r.action for r in find(audit_db, window)] == ["password-reset"]
    lines = to_csv(find(audit_db, Query())).splitlines()
    assert lines[0] == "at,actor,action,subject,address,detail" and len(lines) == 4
    assert lines[3].startswith("2026-12-01T12:00:00+00:00,-,login-failed,ann,198.51.100.2,")


def test_retention_prunes_only_older_records_and_zero_keeps_all(audit_db):
    record(audit_db, "admin", "approve", "old", at=T0 - timedelta(days=400))
    record(audit_db, "admin", "approve", "new", at=T0 - timedelta(days=10))
    assert prune(audit_db, 0, now=T0) == 0
    assert prune(audit_db, 365, now=T0) == 1
    assert [r.subject for r in find(audit_db, Query())] == ["new"]


def test_a_bad_filter_is_refused_in_one_line_naming_it():
    from tornado import web

    from hub_ext.web.auditpage import audit_query

    def asked(**given):
        return audit_query(lambda name: given.get(name))

    assert asked(user="ann", action="approve", since="2026-12-01T09:00Z", limit="10") == Query(
        user="ann", action="approve", since=datetime(2026, 12, 1, 9, 0), limit=10
    )
    for given, message in [
        ({"action": "nope"}, "action='nope' is not an audited action"),
        ({"since": "yesterday"}, "since='yesterday' is not a time; use ISO 8601"),
        ({"limit": "0"}, "limit='0' is not a number of records from 1 to 5000"),
    ]:
        with pytest.raises(web.HTTPError) as refused:
            asked(**given)
        assert refused.value.status_code == 400 and message in refused.value.log_message
