"""The embedded default store: one SQLite file in WAL mode, committed with synchronous=FULL."""
from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from ..errors import SchemaError, StoreError
from .sql import SCHEMA_VERSION, SQLStore, schema

BUSY_SECONDS = 2.0  # wait this long for the write lock, then fail: a 503 inside Zoom's 3 s beats a timeout


class SQLiteStore(SQLStore):
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._pid = os.getpid()

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection; never one carried across fork."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            self._pid = os.getpid()
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open the SQLite database {self.path}: {exc}") from None
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self):
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"the SQLite database {self.path} failed: {exc}") from None

    @contextmanager
    def reading(self):
        try:
            yield self._conn()
        except sqlite3.Error as exc:
            raise StoreError(f"the SQLite database {self.path} failed: {exc}") from None

    def migrate(self) -> None:
        conn = self._conn()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise SchemaError(f"{self.path} has schema version {version}, newer than this reactor "
                                  f"({SCHEMA_VERSION}): upgrade reactor")
            conn.executescript(schema("INTEGER PRIMARY KEY", "REAL"))
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create the schema in {self.path}: {exc}") from None

    def check_schema(self) -> None:
        self.migrate()  # the embedded store migrates itself at start-up

    def ping(self) -> None:
        """Ready means able to commit: take the write lock and let it go."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"the SQLite database {self.path} cannot take writes: {exc}") from None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
