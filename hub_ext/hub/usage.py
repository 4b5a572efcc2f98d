"""Hourly figures per user (issue 29, part 2): CPU, memory, GPU and running time, one row per user per hour in a table
of hubforge's beside JupyterHub's (`hubforge_usage_hourly`), kept ACTIVITY_RETENTION_DAYS; and the usage report made
from it, by user or by group, as rows or CSV.

The collector (hub_ext.hub.activity) adds each interval's figures to a `Ledger` in memory and writes an hour's
figures once, when the hour is over (and what it holds when the hub stops): one transaction an hour, never one per
interval or per user. A write adds to a row that is already there, so a hub restarted within an hour loses nothing
it wrote.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, String, UniqueConstraint, tuple_
from sqlalchemy.orm import Session, declarative_base

from hub_ext.auth import tables

Base = declarative_base()
BY = ("user", "group")
NO_GROUP = "(no group)"  # the report's row for users in no group, by=group
GIB = 1024**3


class HourlyUsage(Base):
    __tablename__ = "hubforge_usage_hourly"
    __table_args__ = (UniqueConstraint("user", "hour", name="uq_hubforge_usage_user_hour"),)
    id = Column(Integer, primary_key=True, autoincrement=True)
    user = Column(String(255), nullable=False, index=True)
    hour = Column(DateTime, nullable=False, index=True)  # the hour's start, UTC, naive (as JupyterHub stores times)
    cpu_seconds = Column(Float, nullable=False, default=0.0)  # CPU time used (core-seconds)
    memory_byte_seconds = Column(Float, nullable=False, default=0.0)  # memory in use x seconds
    gpu_seconds = Column(Float, nullable=False, default=0.0)  # GPUs held x seconds
    running_seconds = Column(Float, nullable=False, default=0.0)  # seconds the lab ran
    peak_memory_bytes = Column(BigInteger, nullable=False, default=0)


@dataclass
class Totals:
    """What one user used in one hour (or, in a report, in a period)."""

    cpu_seconds: float = 0.0
    memory_byte_seconds: float = 0.0
    gpu_seconds: float = 0.0
    running_seconds: float = 0.0
    peak_memory_bytes: int = 0

    def add(self, other: Totals) -> None:
        self.cpu_seconds += other.cpu_seconds
        self.memory_byte_seconds += other.memory_byte_seconds
        self.gpu_seconds += other.gpu_seconds
        self.running_seconds += other.running_seconds
        self.peak_memory_bytes = max(self.peak_memory_bytes, other.peak_memory_bytes)


Key = tuple[str, datetime]  # (user, hour)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class Ledger:
    """The figures of the hours not written yet, (user, hour) -> Totals."""

    open: dict[Key, Totals] = field(default_factory=dict)

    def add(self, user: str, at: datetime, cpu_seconds: float, memory_bytes: int, seconds: float, gpus: int) -> None:
        """One interval of one lab: `seconds` of running, ending at `at` (the interval counts in `at`'s hour)."""
        totals = self.open.setdefault((user, hour_of(at)), Totals())
        totals.add(
            Totals(
                cpu_seconds=cpu_seconds,
                memory_byte_seconds=memory_bytes * seconds,
                gpu_seconds=gpus * seconds,
                running_seconds=seconds,
                peak_memory_bytes=memory_bytes,
            )
        )

    def take(self, now: datetime | None = None) -> dict[Key, Totals]:
        """Remove and return the hours that are over at `now` (None: every hour held, for a stopping hub)."""
        current = hour_of(now) if now is not None else None
        done = {key: totals for key, totals in self.open.items() if current is None or key[1] < current}
        for key in done:
            del self.open[key]
        return done


def ensure_table(db: Session) -> None:
    """Create the table in the hub's database if it is not there (hub_ext.auth.tables)."""
    tables.ensure(db, HourlyUsage.__table__)


def write(db: Session, figures: Mapping[Key, Totals]) -> int:
    """Add `figures` to the table in one transaction (a row that exists is added to); how many rows were touched."""
    if not figures:
        return 0
    ensure_table(db)
    keys = list(figures)
    rows = {
        (row.user, row.hour): row
        for row in db.query(HourlyUsage).filter(tuple_(HourlyUsage.user, HourlyUsage.hour).in_(keys)).all()
    }
    for (user, hour), totals in figures.items():
        row = rows.get((user, hour))
        if row is None:
            db.add(HourlyUsage(user=user, hour=hour, **vars(totals)))
            continue
        row.cpu_seconds += totals.cpu_seconds
        row.memory_byte_seconds += totals.memory_byte_seconds
        row.gpu_seconds += totals.gpu_seconds
        row.running_seconds += totals.running_seconds
        row.peak_memory_bytes = max(row.peak_memory_bytes, totals.peak_memory_bytes)
    db.commit()
    return len(figures)


def prune(db: Session, retention_days: int, now: datetime | None = None) -> int:
    """Drop the hours older than the retention; how many rows went."""
    ensure_table(db)
    cutoff = (now or utc_now()) - timedelta(days=retention_days)
    gone = db.query(HourlyUsage).filter(HourlyUsage.hour < cutoff).delete(synchronize_session=False)
    db.commit()
    return gone


@dataclass(frozen=True)
class Period:
    """A report's time range, [since, until), UTC naive, and how rows are grouped."""

    since: datetime
    until: datetime
    by: str = "user"


def per_user(db: Session, period: Period, pending: Mapping[Key, Totals], only: str | None = None) -> dict[str, Totals]:
    """Each user's totals over the period (or `only` that user's): the table's hours plus the hours the collector
    holds unwritten."""
    ensure_table(db)
    found: dict[str, Totals] = {}
    rows = db.query(HourlyUsage).filter(HourlyUsage.hour >= hour_of(period.since), HourlyUsage.hour < period.until)
    if only is not None:
        rows = rows.filter(HourlyUsage.user == only)
        pending = {key: totals for key, totals in pending.items() if key[0] == only}
    for row in rows:
        found.setdefault(row.user, Totals()).add(
            Totals(
                row.cpu_seconds, row.memory_byte_seconds, row.gpu_seconds, row.running_seconds, row.peak_memory_bytes
            )
        )
    for (user, hour), totals in pending.items():
        if hour_of(period.since) <= hour < period.until:
            found.setdefault(user, Totals()).add(totals)
    return found


def by_group(totals: Mapping[str, Totals], groups_of: Mapping[str, Iterable[str]]) -> dict[str, tuple[Totals, int]]:
    """Users' totals summed per group (a user in two groups counts in both; in none: NO_GROUP), with how many users
    each sum holds. Groups are the users' groups now, not when the figures were taken."""
    found: dict[str, tuple[Totals, int]] = {}
    for user, figures in totals.items():
        for group in sorted(groups_of.get(user) or ()) or [NO_GROUP]:
            summed, count = found.get(group, (Totals(), 0))
            summed.add(figures)
            found[group] = (summed, count + 1)
    return found


def report_row(name: str, totals: Totals, users: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "users": users,
        "cpu_hours": round(totals.cpu_seconds / 3600, 4),
        "memory_gib_hours": round(totals.memory_byte_seconds / GIB / 3600, 4),
        "gpu_hours": round(totals.gpu_seconds / 3600, 4),
        "running_hours": round(totals.running_seconds / 3600, 4),
        "peak_memory_bytes": int(totals.peak_memory_bytes),
    }


def report(
    db: Session, period: Period, pending: Mapping[Key, Totals], groups_of: Mapping[str, Iterable[str]]
) -> list[dict[str, Any]]:
    """The usage report: one row per user (or group), most CPU first."""
    users = per_user(db, period, pending)
    if period.by == "group":
        rows = [report_row(name, totals, count) for name, (totals, count) in by_group(users, groups_of).items()]
    else:
        rows = [report_row(name, totals) for name, totals in users.items()]
    return sorted(rows, key=lambda row: (-row["cpu_hours"], row["name"]))


REPORT_COLUMNS = ("name", "users", "cpu_hours", "memory_gib_hours", "gpu_hours", "running_hours", "peak_memory_bytes")


def report_csv(rows: Iterable[Mapping[str, Any]], by: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([by if column == "name" else column for column in REPORT_COLUMNS])
    for row in rows:
        writer.writerow([row[column] for column in REPORT_COLUMNS])
    return out.getvalue()
