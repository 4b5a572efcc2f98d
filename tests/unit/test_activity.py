"""The activity collector's pure parts (issue 29, part 2): cgroup files of both versions and drivers, CPU % from two
readings, the labs in one listing, the hourly ledger and its flush, pruning, the usage report by user and group, the
Activity rows, CSV and the report's argument errors."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from jupyterhub import orm
from tornado import web

from hub_ext.hub import cgroups, usage
from hub_ext.hub.activity import Collector, Lab, group_policies, labs_in, quotas, unmeasured, volume_figures
from hub_ext.labs.policy import PROPERTY
from hub_ext.web.activitypage import activity_rows, matches, rows_csv, usage_period

ID = "a" * 64
T0 = datetime(2026, 12, 1, 9, 0)
GIB = 1 << 30


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_tree(root: Path, layout: str, cpu_ns: int, memory: int, inactive: int, limit: str) -> None:
    leaf = f"docker/{ID}" if layout == "cgroupfs" else f"system.slice/docker-{ID}.scope"
    write(root / "cpuacct" / leaf / "cpuacct.usage", f"{cpu_ns}\n")
    write(root / "memory" / leaf / "memory.usage_in_bytes", f"{memory}\n")
    write(root / "memory" / leaf / "memory.stat", f"cache 999\ntotal_inactive_file {inactive}\nrss 5\n")
    write(root / "memory" / leaf / "memory.limit_in_bytes", f"{limit}\n")


def v2_tree(root: Path, layout: str, usage_usec: int, memory: int, inactive: int, limit: str) -> None:
    leaf = root / (f"docker/{ID}" if layout == "cgroupfs" else f"system.slice/docker-{ID}.scope")
    write(leaf / "cpu.stat", f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    write(leaf / "memory.current", f"{memory}\n")
    write(leaf / "memory.stat", f"anon 10\nfile 20\ninactive_file {inactive}\n")
    write(leaf / "memory.max", f"{limit}\n")


@pytest.mark.parametrize("layout", ["cgroupfs", "systemd"])
def test_cgroup_v1_either_driver(tmp_path, layout):
    v1_tree(tmp_path, layout, 5_000_000_000, 300 << 20, 100 << 20, str(2 * GIB))
    assert cgroups.read(tmp_path, ID) == cgroups.Reading(5_000_000_000, 200 << 20, 2 * GIB)


@pytest.mark.parametrize("layout", ["cgroupfs", "systemd"])
def test_cgroup_v2_either_driver(tmp_path, layout):
    v2_tree(tmp_path, layout, 1_500_000, 64 << 20, 4 << 20, "max")
    assert cgroups.read(tmp_path, ID) == cgroups.Reading(1_500_000_000, 60 << 20, None)


def test_no_limit_in_v1_and_a_cgroup_that_is_not_there(tmp_path):
    v1_tree(tmp_path, "cgroupfs", 1, 10, 0, "9223372036854771712")  # what v1 writes for "no limit"
    assert cgroups.read(tmp_path, ID).memory_limit is None
    assert cgroups.read(tmp_path, "b" * 64) is None  # another node's lab, or stopped meanwhile
    assert cgroups.read(tmp_path / "not-mounted", ID) is None


def test_cpu_percent_is_the_usage_delta_over_the_wall_time_delta():
    before, after = cgroups.Reading(1_000_000_000, 0, None), cgroups.Reading(4_000_000_000, 0, None)
    assert cgroups.cpu_percent(before, 100.0, after, 102.0) == pytest.approx(150.0)  # 3 s of CPU in 2 s
    assert cgroups.cpu_percent(None, 0.0, after, 102.0) is None  # the first look
    assert cgroups.cpu_percent(after, 100.0, before, 102.0) is None  # restarted: the counter went back
    assert cgroups.cpu_percent(before, 102.0, after, 102.0) is None


def test_the_labs_of_one_listing_leave_helpers_out_and_count_gpus():
    listing = [
        {"Id": "1" * 64, "Image": "lab:abc", "Labels": {"hubforge.user": "ann", "hubforge.gpus": "0,2"}},
        {"Id": "2" * 64, "Image": "lab:abc", "Labels": {"hubforge.user": "bob"}},
        {"Id": "3" * 64, "Image": "hub:x", "Labels": {"hubforge.user": "bob", "hubforge.role": "helper"}},
        {"Id": "4" * 64, "Image": "hub:x", "Labels": {"hubforge.role": "hub"}},
    ]
    assert labs_in(listing) == {"ann": Lab("ann", "1" * 64, "lab:abc", 2), "bob": Lab("bob", "2" * 64, "lab:abc", 0)}


class Cgroups:
    """The cgroup files as a table the test writes: container id -> Reading."""

    def __init__(self) -> None:
        self.now: dict[str, cgroups.Reading] = {}

    def __call__(self, root: Path, container_id: str) -> cgroups.Reading | None:
        return self.now.get(container_id)


def epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=timezone.utc).timestamp()


def test_the_collector_keeps_figures_an_hours_series_and_the_ledger():
    files = Cgroups()
    collector = Collector(15, Path("/nowhere"), read=files)
    ann = {"ann": Lab("ann", ID, "lab:1", 1)}
    files.now[ID] = cgroups.Reading(10 * 10**9, 100 << 20, GIB)
    collector.observe(ann, epoch(T0))
    assert collector.now_of("ann")["cpu_percent"] is None and not collector.ledger.open  # one look: no interval yet
    files.now[ID] = cgroups.Reading(25 * 10**9, 200 << 20, GIB)  # 15 s of CPU in 15 s: one core
    collector.observe(ann, epoch(T0 + timedelta(seconds=15)))
    now = collector.now_of("ann")
    assert (now["cpu_percent"], now["memory_bytes"], now["memory_limit"], now["gpus"]) == (100.0, 200 << 20, GIB, 1)
    assert [point[1] for point in now["series"]] == [0.0, 100.0]
    totals = collector.ledger.open[("ann", T0)]
    assert (totals.cpu_seconds, totals.running_seconds, totals.gpu_seconds) == (15.0, 15.0, 15.0)
    assert totals.memory_byte_seconds == (200 << 20) * 15 and totals.peak_memory_bytes == 200 << 20
    collector.observe({}, epoch(T0 + timedelta(seconds=30)))  # stopped
    assert collector.now_of("ann") is None and ("ann", T0) in collector.ledger.open
    assert collector.status()["runs"] == 3


def test_a_stalled_hub_does_not_bill_its_pause_and_the_series_is_an_hour():
    files = Cgroups()
    collector = Collector(10, Path("/nowhere"), read=files)
    lab = {"ann": Lab("ann", ID, "lab:1", 0)}
    for step in range(400):
        files.now[ID] = cgroups.Reading(step * 10**9, 1, None)
        collector.observe(lab, epoch(T0) + step * 10)
    assert len(collector.labs["ann"].series) == 361  # an hour of 10 s points
    sent = collector.now_of("ann")["series"]
    assert len(sent) <= 60 and sent[-1][0] == int(epoch(T0) + 399 * 10)  # thinned for the page, the newest kept
    files.now[ID] = cgroups.Reading(500 * 10**9, 1, None)
    before = sum(t.running_seconds for t in collector.ledger.open.values())
    collector.observe(lab, epoch(T0) + 399 * 10 + 600)  # ten minutes without a run
    assert sum(t.running_seconds for t in collector.ledger.open.values()) - before == 30  # 3 intervals at most


def test_hours_are_written_when_over_added_to_and_pruned(db):
    ledger = usage.Ledger()
    ledger.add("ann", T0 + timedelta(minutes=59), 60.0, GIB, 60, 0)
    ledger.add("ann", T0 + timedelta(minutes=61), 30.0, GIB, 30, 0)
    assert usage.write(db, ledger.take(T0 + timedelta(minutes=62))) == 1  # only the hour that is over
    assert list(ledger.open) == [("ann", T0 + timedelta(hours=1))]
    again = usage.Ledger()
    again.add("ann", T0 + timedelta(minutes=30), 40.0, 2 * GIB, 10, 1)  # a restarted hub, the same hour
    usage.write(db, again.take(None))
    (row,) = db.query(usage.HourlyUsage).all()
    assert (row.cpu_seconds, row.running_seconds, row.gpu_seconds, row.peak_memory_bytes) == (100.0, 70, 10, 2 * GIB)
    assert usage.prune(db, 7, T0 + timedelta(days=7, minutes=1)) == 1
    assert db.query(usage.HourlyUsage).count() == 0


def test_the_report_by_user_and_by_group_counts_the_hour_under_way(db):
    figures = usage.Ledger()
    figures.add("ann", T0, 3600.0, GIB, 3600, 2)
    figures.add("bob", T0, 1800.0, 2 * GIB, 3600, 0)
    figures.add("cid", T0 - timedelta(days=8), 3600.0, GIB, 3600, 0)  # before the period
    usage.write(db, figures.take(None))
    under_way = usage.Ledger()
    under_way.add("bob", T0 + timedelta(hours=1), 1800.0, 0, 1800, 0)
    period = usage.Period(T0 - timedelta(days=7), T0 + timedelta(hours=2))
    rows = usage.report(db, period, under_way.open, {})
    assert [(r["name"], r["cpu_hours"], r["gpu_hours"], r["memory_gib_hours"]) for r in rows] == [
        ("ann", 1.0, 2.0, 1.0),
        ("bob", 1.0, 0.0, 2.0),
    ]
    groups = {"ann": ["physics", "gpu"], "bob": ["physics"]}
    by_group = usage.report(db, usage.Period(period.since, period.until, "group"), under_way.open, groups)
    assert {(r["name"], r["cpu_hours"], r["users"]) for r in by_group} == {("physics", 2.0, 2), ("gpu", 1.0, 1)}
    assert usage.per_user(db, period, under_way.open, only="bob")["bob"].cpu_seconds == 3600
    exported = list(csv.reader(io.StringIO(usage.report_csv(by_group, "group"))))
    assert exported[0][:3] == ["group", "users", "cpu_hours"] and len(exported) == 3


def test_report_arguments_default_to_a_week_and_refuse_bad_ones_in_one_line():
    now = datetime(2026, 12, 8, 10, 0)
    assert usage_period(lambda name: None, now) == usage.Period(now - timedelta(days=7), now, "user")
    given = {"since": "2026-12-01T00:00Z", "until": "2026-12-02T01:00+01:00", "by": "group"}
    assert usage_period(given.get, now) == usage.Period(datetime(2026, 12, 1), datetime(2026, 12, 2), "group")
    for args, said in (
        ({"by": "team"}, "by='team' is not a grouping; use by=user or by=group"),
        ({"since": "monday"}, "since='monday' is not a time"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "is not before until"),
        ({"since": "2020-01-01"}, "longer than 366 days"),
    ):
        with pytest.raises(web.HTTPError) as raised:
            usage_period(args.get, now)
        assert raised.value.status_code == 400 and said in raised.value.log_message


def test_quotas_come_from_the_groups_policies_the_most_generous_and_bad_ones_are_left_out():
    class Group:
        def __init__(self, name, properties):
            self.name, self.properties = name, properties

    policies = group_policies(
        [
            Group("a", {PROPERTY: {"home_quota": "1G"}}),
            Group("b", {PROPERTY: {"home_quota": "2G"}}),
            Group("bad", {PROPERTY: {"home_quota": "lots"}}),
        ]
    )
    assert set(policies) == {"a", "b"}
    assert quotas(policies, ["a", "b", "bad"]) == {"home": 2 * GIB} and quotas(policies, []) == {}
    collector = Collector(15, Path("/nowhere"))
    collector.note_volumes(
        {
            "Volumes": [
                {"Name": "v_home", "Labels": {"hubforge.project": "p"}, "UsageData": {"Size": 5}},
                {"Name": "v_cache", "Labels": {"hubforge.project": "p"}, "UsageData": {"Size": -1}},
                {"Name": "v_workspace", "Labels": {"hubforge.project": "other"}, "UsageData": {"Size": 9}},
            ]
        },
        "p",
        0.0,
    )
    volumes = {"home": "v_home", "workspace": "v_workspace", "cache": "v_cache"}
    assert volume_figures(collector, volumes, {"home": 2 * GIB}) == {
        "home": {"size_bytes": 5, "quota_bytes": 2 * GIB},
        "cache": {"size_bytes": None, "quota_bytes": None},
    }


def test_activity_rows_for_every_user_the_filter_and_csv(db):
    physics = orm.Group(name="physics")
    ann, bob = orm.User(name="ann", groups=[physics]), orm.User(name="bob")
    db.add_all([physics, ann, bob])
    db.commit()
    server = orm.Server()
    db.add(server)
    db.add(orm.Spawner(user=ann, name="", server=server))
    db.commit()
    files = Cgroups()
    files.now[ID] = cgroups.Reading(10**9, 64 << 20, GIB)
    collector = Collector(15, Path("/nowhere"), read=files)
    collector.node = "node-1"
    collector.observe({"ann": Lab("ann", ID, "lab:1", 0)}, 0.0)
    rows = activity_rows(db, collector)
    assert [(r["name"], r["running"], r["node"], r["image"], r["groups"]) for r in rows] == [
        ("ann", True, "node-1", "lab:1", ["physics"]),
        ("bob", False, "", "", []),
    ]
    assert rows[0]["memory_bytes"] == 64 << 20 and rows[0]["cpu_percent"] is None
    assert [r["name"] for r in rows if matches(r, "PHYS", False)] == ["ann"]
    assert [r["name"] for r in rows if matches(r, "", True)] == ["ann"]
    assert [r["name"] for r in rows if matches(r, "lab:", False)] == ["ann"]
    exported = list(csv.DictReader(io.StringIO(rows_csv(rows))))
    assert [(r["user"], r["running"], r["memory_bytes"], r["groups"]) for r in exported] == [
        ("ann", "1", str(64 << 20), "physics"),
        ("bob", "0", "", ""),
    ]


def test_a_running_lab_the_collector_has_not_seen_is_new_or_on_another_node(db):
    ann, bob = orm.User(name="ann"), orm.User(name="bob")
    servers = orm.Server(), orm.Server()
    db.add_all([ann, bob, *servers])
    db.add(orm.Spawner(user=ann, name="", server=servers[0], state={"node_id": "x" * 25}))  # Swarm
    db.add(orm.Spawner(user=bob, name="", server=servers[1]))  # Compose: it started since the last listing
    db.commit()
    ann_row, bob_row = activity_rows(db, Collector(15, Path("/nowhere")))
    assert ann_row["running"] and ann_row["node"] == "x" * 12
    assert (
        ann_row["note"]
        == "started since the last collection: figures at the next one, or figures only for the hub's node"
    )
    assert bob_row["running"] and bob_row["node"] == ""
    assert bob_row["note"] == "started since the last collection: figures at the next one"


def test_a_new_labs_volumes_are_looked_at_before_their_turn():
    files = Cgroups()
    collector = Collector(15, Path("/nowhere"), read=files)
    collector.observe({"ann": Lab("ann", ID, "lab:1", 0)}, 0.0)
    assert unmeasured(collector, "jupyterlab")
    collector.note_volumes(
        {"Volumes": [{"Name": "jupyterlab-ann_home", "Labels": {"hubforge.project": "p"}, "UsageData": {"Size": 1}}]},
        "p",
        1.0,
    )
    assert not unmeasured(collector, "jupyterlab")
