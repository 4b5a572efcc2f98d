"""The in-hub idle culler (hub_ext.hub.culler): each user's policy decides, idle_timeout and max_session, 0 never."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from jupyterhub import orm

from hub_ext.hub.culler import policy_verdict, verdict
from hub_ext.labs.policy import PROPERTY

from ..support.fakedaemon import make_spawner

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def test_verdict_rules():
    hour_ago = NOW - timedelta(hours=1)
    assert verdict("a", NOW, hour_ago, hour_ago, idle=1800, longest=0).reason.startswith("idle 3600 s, longer than")
    assert verdict("a", NOW, hour_ago, hour_ago, idle=7200, longest=0) is None
    assert verdict("a", NOW, NOW, hour_ago, idle=0, longest=1800).reason.startswith("ran 3600 s, longer than its max")
    assert verdict("a", NOW, hour_ago, hour_ago, idle=0, longest=0) is None  # 0: never
    assert verdict("a", NOW, None, None, idle=60, longest=60) is None  # no record yet: kept


class Record:
    """The orm Spawner's two columns the culler reads (naive UTC, as JupyterHub stores them)."""

    def __init__(self, idle_for, running_for):
        self.last_activity = (NOW - idle_for).replace(tzinfo=None)
        self.started = (NOW - running_for).replace(tzinfo=None)


def test_each_users_policy_decides_who_is_culled(db, monkeypatch):
    spawners = {}
    for name in ("idle", "patient", "exam"):
        spawners[name], _ = make_spawner(db, name)
        spawners[name].idle_timeout = 3600  # the stack's IDLE_CULLER_TIMEOUT
    never = orm.Group(name="long-jobs", properties={PROPERTY: {"idle_timeout": 0}})
    timed = orm.Group(name="exam", properties={PROPERTY: {"max_session": 7200}})
    db.add_all([never, timed])
    spawners["patient"].user.orm_user.groups.append(never)
    spawners["exam"].user.orm_user.groups.append(timed)
    db.commit()
    records = {
        "idle": Record(timedelta(hours=2), timedelta(hours=3)),
        "patient": Record(timedelta(hours=2), timedelta(hours=3)),
        "exam": Record(timedelta(minutes=1), timedelta(hours=3)),
    }
    culled = {}
    for name, spawner in spawners.items():
        monkeypatch.setattr(type(spawner), "orm_spawner", records[name], raising=False)
        decided = policy_verdict(spawner, NOW)
        if decided:
            culled[name] = decided.reason
    # the default's hour for idle; exam's two-hour session; never for patient
    assert set(culled) == {"idle", "exam"}
    assert "idle 7200 s" in culled["idle"] and "max_session 7200 s" in culled["exam"]
