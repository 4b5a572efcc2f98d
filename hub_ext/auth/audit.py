"""The audit trail (issue 29, part 3): who did what to whom, when and from where, for every action that changes who
can do what or touches someone's data.

A record goes to the hub's own database (a table of hubforge's, `hubforge_audit`, beside JupyterHub's) and, as one
JSON line, to the hub's log (logger `JupyterHub.audit`) for shipping elsewhere. Records are only ever added: nothing
here updates or deletes one, except `prune`, which drops those older than the retention (a setting).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Column, DateTime, Integer, String, Text, or_
from sqlalchemy.orm import Session, declarative_base

from hub_ext.auth import tables

log = logging.getLogger("JupyterHub").getChild("audit")
Base = declarative_base()

ACTIONS = (
    "signup",
    "user-create",
    "user-change",
    "approve",
    "unapprove",
    "discard",
    "delete",
    "password-change",
    "password-reset",
    "batch-create",
    "group-change",
    "policy-change",
    "volume-reset",
    "broadcast",
    "token-create",
    "login-failed",
    "throttled",
)


class AuditRecord(Base):
    __tablename__ = "hubforge_audit"
    id = Column(Integer, primary_key=True, autoincrement=True)
    at = Column(DateTime, nullable=False, index=True)  # UTC, naive (as JupyterHub stores times)
    actor = Column(String(255), nullable=False, index=True)  # who: a user, a service, or "-" (an anonymous request)
    action = Column(String(32), nullable=False, index=True)
    subject = Column(String(255), nullable=False, default="", index=True)  # whom: a user, a group, or ""
    address = Column(String(64), nullable=False, default="")
    detail = Column(Text, nullable=False, default="{}")  # JSON object


@dataclass(frozen=True)
class Query:
    """A page's filter: a user (as actor or subject), an action, and a time range; newest first."""

    user: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 500


def ensure_table(db: Session) -> None:
    """Create the table in the hub's database if it is not there (hub_ext.auth.tables)."""
    tables.ensure(db, AuditRecord.__table__)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def record(
    db: Session,
    actor: str,
    action: str,
    subject: str = "",
    address: str = "",
    detail: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Add one record and write its JSON line; the caller's transaction is committed here."""
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r} is not one of {', '.join(ACTIONS)}")
    ensure_table(db)
    entry = AuditRecord(
        at=at or _now(),
        actor=actor or "-",
        action=action,
        subject=subject or "",
        address=address or "",
        detail=json.dumps(dict(detail or {}), sort_keys=True, default=str),
    )
    db.add(entry)
    db.commit()
    log.info(json.dumps(as_dict(entry), sort_keys=True))
    return entry


def as_dict(entry: AuditRecord) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.replace(tzinfo=timezone.utc).isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "address": entry.address,
        "detail": json.loads(entry.detail or "{}"),
    }


def find(db: Session, query: Query) -> list[AuditRecord]:
    rows = db.query(AuditRecord)
    if query.user:
        rows = rows.filter(or_(AuditRecord.actor == query.user, AuditRecord.subject == query.user))
    if query.action:
        rows = rows.filter(AuditRecord.action == query.action)
    if query.since:
        rows = rows.filter(AuditRecord.at >= query.since)
    if query.until:
        rows = rows.filter(AuditRecord.at < query.until)
    return rows.order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(query.limit).all()


def to_csv(entries: Iterable[AuditRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["at", "actor", "action", "subject", "address", "detail"])
    for entry in entries:
        row = as_dict(entry)
        writer.writerow([row["at"], row["actor"], row["action"], row["subject"], row["address"], entry.detail])
    return out.getvalue()


def prune(db: Session, retention_days: int, now: datetime | None = None) -> int:
    """Drop records older than the retention (0: keep every record); how many went."""
    if retention_days <= 0:
        return 0
    cutoff = (now or _now()) - timedelta(days=retention_days)
    gone = db.query(AuditRecord).filter(AuditRecord.at < cutoff).delete(synchronize_session=False)
    db.commit()
    return gone
