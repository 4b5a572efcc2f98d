"""The hub's SQLite connections get a write-ahead log and NORMAL sync; other databases are left alone."""

from __future__ import annotations

import sqlalchemy

from hub_ext.hub import database


def test_sqlite_connections_use_a_write_ahead_log(tmp_path):
    database.install()
    database.install()  # twice: one listener
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    engine.dispose()


def test_a_connection_that_is_not_sqlite_is_left_alone():
    class OtherDriver:
        def cursor(self):
            raise AssertionError("a non-SQLite connection was given pragmas")

    database.tune_connection(OtherDriver())
