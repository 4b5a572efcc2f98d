"""hubforge's own tables in the hub's database, beside JupyterHub's: the audit trail, the password marks and the
hourly usage. Each is made the first time this process uses it on a database (JupyterHub's migrations never touch
them), and never looked for again."""

from __future__ import annotations

import weakref

from sqlalchemy import Table
from sqlalchemy.orm import Session

_MADE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # database engine -> names of the tables made


def ensure(db: Session, table: Table) -> bool:
    """Create `table` in `db`'s database if it is not there; True the first time this process asked for it."""
    bind = db.get_bind()
    made = _MADE.setdefault(bind, set())
    if table.name in made:
        return False
    table.metadata.create_all(bind, tables=[table])
    made.add(table.name)
    return True
