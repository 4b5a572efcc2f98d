"""The hub's SQLite database: a write-ahead log, and no disk flush at every commit."""

from __future__ import annotations

import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


def tune_connection(connection) -> None:
    """WAL and synchronous=NORMAL on a SQLite connection (any other database is left alone).

    JupyterHub commits on the event loop, many times per login and spawn. In SQLite's default mode each
    commit writes a rollback journal and waits for the disk twice; with a write-ahead log and NORMAL it
    appends to the log and waits for nothing, and the database stays consistent through any crash. Only
    an operating-system crash or power cut can lose the last moments of commits (a login, an approval).
    """
    if not isinstance(connection, sqlite3.Connection):
        return
    cursor = connection.cursor()
    try:
        for pragma in PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def install() -> None:
    """Tune every SQLite connection this process opens from now on (the hub's and NativeAuthenticator's)."""
    if not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)


def _on_connect(dbapi_connection, _record) -> None:
    tune_connection(dbapi_connection)
