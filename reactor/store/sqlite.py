"""The embedded default store: one SQLite file in WAL mode, committed with synchronous=FULL."""
from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..delivery import Accepted
from ..errors import SchemaError, StoreError
from .schema import SCHEMA_VERSION, delivery_row, job_rows, migrations
from .sql import SQLStore

BUSY_SECONDS = 2.0  # wait this long for the write lock, then fail: a 503 inside Zoom's 3 s beats a timeout
# SQLite's own busy handler sleeps up to 100 ms between tries; reactor waits for the lock itself:
# threads of one process queue on a Python lock, processes retry every BUSY_POLL seconds.
BUSY_POLL = 0.0002
PAGE_SIZE = 1024  # bytes, for a new file (see _conn)


@functools.cache
def _insert(table: str, columns: tuple, conflict: str = "") -> str:
    """INSERT ... RETURNING id for a row of these named columns (schema.py says which)."""
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)}) "
            f"{conflict} RETURNING id")


def create_private(path: str) -> None:
    """Create the database file (and its folder) readable by this user only, before SQLite opens it:
    it holds participants' names and emails and meeting topics. SQLite gives the -wal and -shm files
    the database file's mode. Existing files and folders keep the mode they have."""
    folder = Path(path).parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class SQLiteStore(SQLStore):
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._pid = os.getpid()
        self._write_lock = threading.Lock()
        super().__init__()

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection; never one carried across fork."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            self._pid = os.getpid()
            try:
                create_private(self.path)
                # Setting up waits for locks (SQLite's busy handler, up to BUSY_SECONDS): another process may be
                # recovering the WAL, as the first connection after all were closed does, or hold the file alone.
                conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                # A new file gets 1 KiB pages (an existing one keeps its size; README, Decisions): each delivery
                # lands on random pages of the dedup and instance indexes, and a commit writes whole pages to
                # the WAL. Under wrk: WAL bytes per delivery 21 -> 9 KB, +5% webhooks a second (4 rounds).
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA cache_size=-512")  # KiB per connection (one per thread); the OS caches the rest
                conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in maintain(), not inside a webhook
                conn.execute("PRAGMA journal_size_limit=67108864")  # a WAL grown by a burst shrinks back to 64 MiB
                conn.execute("PRAGMA busy_timeout=0")  # from here on reactor waits for the write lock itself
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open the SQLite database {self.path}: {exc}") from None
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self, durable: bool = True, deadline: float | None = None):
        """One transaction under this process's write lock. One deadline (by default BUSY_SECONDS from now)
        bounds the whole wait, for this process's lock and the file's together: a webhook queued behind a
        thread that is itself waiting out another process's lock still gets its 503 inside Zoom's 3 s."""
        if deadline is None:
            deadline = time.monotonic() + BUSY_SECONDS
        if not self._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise StoreError(f"the SQLite database {self.path} failed: database is locked (by this process)")
        try:
            with self._locked_transaction(durable, deadline) as conn:
                yield conn
        finally:
            self._write_lock.release()

    @contextmanager
    def _locked_transaction(self, durable: bool, deadline: float):
        """One transaction, given up at deadline if the file stays locked; the caller holds this process's write lock."""
        conn = self._conn()
        try:
            conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
            self._retry_busy(conn, "BEGIN IMMEDIATE", deadline)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._retry_busy(conn, "COMMIT", deadline)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"the SQLite database {self.path} failed: {exc}") from None

    @staticmethod
    def _retry_busy(conn, statement: str, deadline: float) -> None:
        pause = BUSY_POLL
        while True:
            try:
                conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 1.5, 0.002)

    @contextmanager
    def reading(self):
        try:
            yield self._conn()
        except sqlite3.Error as exc:
            raise StoreError(f"the SQLite database {self.path} failed: {exc}") from None

    def accept_all(self, conn, items) -> list[Accepted]:
        """Row by row: SQLite statements are function calls in this process, not round trips."""
        results = []
        for delivery_id, delivery, actions, deadline in items:
            if delivery_id is None:  # numbered from the inbox's sequence, so never a seq an append will take
                delivery_id = conn.execute("INSERT INTO inbox (received_at, body, dedup_key, account) VALUES (0, '', '', '') RETURNING seq"
                                           ).fetchone()[0]
                conn.execute("DELETE FROM inbox WHERE seq = ?", (delivery_id,))
            row = delivery_row(delivery, delivery_id)
            stored = conn.execute(_insert("deliveries", tuple(row), "ON CONFLICT (dedup_key) DO NOTHING"), row).fetchone()
            if stored is None:
                first = conn.execute("SELECT id FROM deliveries WHERE dedup_key = ?", (delivery.dedup_key,)).fetchone()
                results.append(Accepted(first["id"], True))
                continue
            job_ids = []
            for job in job_rows(delivery, actions, deadline):
                job.pop("dedup_key")
                job.update(delivery_id=stored["id"], status="pending", updated_at=job["due_at"])
                job_ids.append(conn.execute(_insert("jobs", tuple(job)), job).fetchone()["id"])
            self.confirm(conn, delivery)
            results.append(Accepted(stored["id"], False, tuple(job_ids)))
        return results

    def append_all(self, conn, items) -> list[int]:
        return [conn.execute("INSERT INTO inbox (received_at, body, dedup_key, account, order_key) VALUES (?, ?, ?, ?, ?) "
                             "RETURNING seq", (received_at, body, key, account, order_key)).fetchone()[0]
                for body, key, account, received_at, order_key in items]

    def migrate(self) -> None:
        """Upgrade step by step under the write lock, reading the version inside it: several processes
        starting at once on one file migrate it once."""
        conn = self._conn()
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            with self.transaction() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise SchemaError(f"{self.path} has schema version {version}, newer than this reactor "
                                      f"({SCHEMA_VERSION}): upgrade reactor")
                for step in migrations("INTEGER PRIMARY KEY", "REAL")[version:]:
                    for statement in step.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create the schema in {self.path}: {exc}") from None

    def check_schema(self) -> None:
        self.migrate()  # the embedded store migrates itself at start-up

    def ping(self) -> None:
        """Ready means able to commit: take the write lock and let it go."""
        try:
            with self.transaction():
                pass
        except StoreError as exc:
            raise StoreError(f"the SQLite database {self.path} cannot take writes: {exc}") from None

    def maintain(self) -> None:
        """Copy the WAL back into the database file (a checkpoint) off the webhook path."""
        try:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise StoreError(f"the SQLite database {self.path} failed a checkpoint: {exc}") from None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

