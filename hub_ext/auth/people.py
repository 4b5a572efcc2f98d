"""People made by an admin (issue 29, part 1): a batch of names read from a pasted list or a CSV file, passphrases
generated for them, and the mark that makes an account choose its own password before anything else opens.

Everything here is data and rules; the pages and APIs that use it are in hub_ext.web.people. A generated passphrase
is handed back once, to the admin who asked, and only its bcrypt hash is kept (NativeAuthenticator's table).
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Column, DateTime, String
from sqlalchemy.orm import Session, declarative_base

from hub_ext.auth import tables

BATCH_MAX = 1000  # lines in one batch: a class or a department, not a directory import

# Lower-case letters and digits a reader cannot confuse (no 0/o, 1/l/i): 31 symbols, 5 a group, 4 groups: 99 bits.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_GROUPS, _GROUP_LENGTH = 4, 5
_SEPARATORS = re.compile(r"[\s,;]+")

Base = declarative_base()


def generate_passphrase() -> str:
    """A passphrase to read out or paste once: `k7qzm-2pwx9-rtb4h-n8cde` (four groups of five, ~99 bits)."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(_GROUP_LENGTH)) for _ in range(_GROUPS))


@dataclass(frozen=True)
class Entry:
    """One person to create: the name as typed (normalised later by the authenticator), the groups to join."""

    line: int
    name: str
    groups: tuple[str, ...] = ()


@dataclass
class Batch:
    entries: list[Entry] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)  # {"line": n, "text": ..., "reason": ...}

    def refuse(self, line: int, text: str, reason: str) -> None:
        self.refused.append({"line": line, "text": text, "reason": reason})


def parse_batch(text: str) -> Batch:
    """A pasted list (`name [group ...]` a line; groups after the name, separated by spaces or commas) or a CSV file
    with a header naming a `name` (or `username`) column and optionally a `groups` column (groups separated by spaces,
    commas or semicolons). Blank lines and lines starting with # are skipped. Lines that cannot be read are refused
    with the reason; the rest are kept, in order."""
    batch = Batch()
    lines = text.splitlines()
    first = next((line for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
    header = [cell.strip().lower() for cell in next(csv.reader([first]), [])] if "," in first else []
    if {"name", "username"} & set(header):
        _parse_csv(text, header, batch)
    else:
        for number, raw in enumerate(lines, start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            name, *groups = [part for part in _SEPARATORS.split(stripped) if part]
            batch.entries.append(Entry(number, name, tuple(dict.fromkeys(groups))))
    if len(batch.entries) > BATCH_MAX:
        for entry in batch.entries[BATCH_MAX:]:
            batch.refuse(entry.line, entry.name, f"a batch holds at most {BATCH_MAX} people; send the rest in another")
        del batch.entries[BATCH_MAX:]
    return batch


def _parse_csv(text: str, header: list[str], batch: Batch) -> None:
    name_column = header.index("name") if "name" in header else header.index("username")
    groups_column = header.index("groups") if "groups" in header else None
    rows = csv.reader(io.StringIO(text))
    seen_header = False
    for row in rows:
        number = rows.line_num
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if not seen_header:  # the header row itself
            seen_header = True
            continue
        name = row[name_column].strip() if name_column < len(row) else ""
        if not name:
            batch.refuse(number, ",".join(row), "no name in the name column")
            continue
        raw_groups = row[groups_column] if groups_column is not None and groups_column < len(row) else ""
        groups = tuple(dict.fromkeys(part for part in _SEPARATORS.split(raw_groups) if part))
        batch.entries.append(Entry(number, name, groups))


class PasswordDue(Base):
    """An account that must choose its own password before anything else opens: made in a batch, or reset by an
    admin. The row goes when the user changes their password."""

    __tablename__ = "hubforge_password_due"
    username = Column(String(255), primary_key=True)
    since = Column(DateTime, nullable=False)
    reason = Column(String(32), nullable=False)  # batch-create | password-reset


class DueStore:
    """The marks, read from the database once and then kept in memory: every hub request asks (the password gate),
    so asking costs a set lookup, not a query. The hub is one process, and only this store writes the table."""

    def __init__(self) -> None:
        self.names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # database engine -> names marked

    def _load(self, db: Session) -> set[str]:
        bind = db.get_bind()
        names = self.names.get(bind)
        if names is None:
            tables.ensure(db, PasswordDue.__table__)
            names = self.names[bind] = {row.username for row in db.query(PasswordDue.username)}
        return names

    def is_due(self, db: Session, name: str) -> bool:
        return name in self._load(db)

    def mark(self, db: Session, name: str, reason: str) -> None:
        names = self._load(db)
        row = db.get(PasswordDue, name)
        if row is None:
            db.add(PasswordDue(username=name, since=datetime.now(timezone.utc).replace(tzinfo=None), reason=reason))
        else:
            row.reason = reason
        db.commit()
        names.add(name)

    def clear(self, db: Session, name: str) -> bool:
        names = self._load(db)
        gone = db.query(PasswordDue).filter(PasswordDue.username == name).delete(synchronize_session=False)
        db.commit()
        names.discard(name)
        return bool(gone)


DUE = DueStore()
