"""The embedded default store: one SQLite file in WAL mode, committed with synchronous=FULL."""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

from ..errors import SchemaError, StoreError
from ..plan import PlannedAction
from .contract import Accepted, Attempt, Job, NewDelivery, Store

SCHEMA_VERSION = 1
BUSY_SECONDS = 2.0  # wait this long for the write lock, then fail: a 503 inside Zoom's 3 s beats a timeout
SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    dedup_key TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    event_ts INTEGER NOT NULL,
    order_key TEXT NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL,
    verdicts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries (received_at);
CREATE INDEX IF NOT EXISTS deliveries_order_key ON deliveries (order_key);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    order_key TEXT NOT NULL,
    account TEXT NOT NULL,
    event_ts INTEGER NOT NULL,
    status TEXT NOT NULL,
    due_at REAL NOT NULL,
    deadline REAL NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_message TEXT NOT NULL DEFAULT '',
    confirmed_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, due_at);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs (order_key, status, event_ts);
CREATE INDEX IF NOT EXISTS jobs_delivery ON jobs (delivery_id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    zoom_code INTEGER,
    message TEXT NOT NULL,
    next_at REAL,
    duration_ms REAL,
    sent TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts (job_id);
CREATE TABLE IF NOT EXISTS pacing (
    account TEXT NOT NULL,
    slot REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pacing_account ON pacing (account, slot);
"""

# The head of each order_key: no earlier pending/running job on the same key.
_IS_HEAD = """NOT EXISTS (SELECT 1 FROM jobs k WHERE k.order_key = j.order_key
                 AND k.status IN ('pending', 'running')
                 AND (k.event_ts, k.delivery_id, k.seq) < (j.event_ts, j.delivery_id, j.seq))"""


class SQLiteStore(Store):
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._pid = os.getpid()

    # -- connections: one per thread, never carried across fork
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            self._pid = os.getpid()
            try:
                if self.path != ":memory:":
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

    def _write(self, fn):
        """Run fn(conn) in one IMMEDIATE transaction; StoreError if it cannot commit."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
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
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create the schema in {self.path}: {exc}") from None

    def ping(self) -> None:
        """Ready means able to commit: take the write lock and let it go."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("SELECT count(*) FROM jobs WHERE 0").fetchone()
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"the SQLite database {self.path} cannot take writes: {exc}") from None

    def accept(self, delivery: NewDelivery, actions: list[PlannedAction], deadline: float) -> Accepted:
        def work(conn):
            cur = conn.execute(
                "INSERT INTO deliveries (dedup_key, event, event_ts, order_key, received_at, body, verdicts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING",
                (delivery.dedup_key, delivery.event, delivery.event_ts_ms, delivery.order_key,
                 delivery.received_at, json.dumps(delivery.body), json.dumps(delivery.verdicts)))
            if cur.rowcount == 0:
                row = conn.execute("SELECT id FROM deliveries WHERE dedup_key = ?", (delivery.dedup_key,)).fetchone()
                return Accepted(row["id"], True)
            delivery_id = cur.lastrowid
            job_ids = []
            for seq, action in enumerate(actions):
                job = conn.execute(
                    "INSERT INTO jobs (delivery_id, seq, action, order_key, account, event_ts, status, due_at, "
                    "deadline, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                    (delivery_id, seq, json.dumps(action.to_dict()), action.order_key, action.account,
                     delivery.event_ts_ms, delivery.received_at, deadline, delivery.received_at))
                job_ids.append(job.lastrowid)
            if delivery.confirms and delivery.order_key:
                conn.execute(
                    "UPDATE jobs SET confirmed_at = ? WHERE id = (SELECT id FROM jobs WHERE order_key = ? "
                    "AND status = 'done' AND confirmed_at IS NULL AND json_extract(action, '$.kind') = ? "
                    "ORDER BY event_ts DESC, id DESC LIMIT 1)",
                    (delivery.received_at, delivery.order_key, delivery.confirms))
            return Accepted(delivery_id, False, tuple(job_ids))

        return self._write(work)

    def claim(self, owner: str, now: float, lease_seconds: float) -> Job | None:
        row = self._write(lambda conn: conn.execute(
            f"UPDATE jobs SET status = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1, "
            f"updated_at = ? WHERE id = (SELECT j.id FROM jobs j WHERE "
            f"((j.status = 'pending' AND j.due_at <= ?) OR (j.status = 'running' AND j.lease_until < ?)) "
            f"AND {_IS_HEAD} ORDER BY j.due_at, j.id LIMIT 1) RETURNING *",
            (owner, now + lease_seconds, now, now, now)).fetchone())
        return _job(row) if row else None

    def superseded(self, job: Job) -> bool:
        row = self._conn().execute(
            "SELECT 1 FROM jobs WHERE order_key = ? AND event_ts > ? AND status IN ('running', 'done', 'dead') "
            "AND id != ? LIMIT 1", (job.action.order_key, job.event_ts_ms, job.id)).fetchone()
        return row is not None

    def finish(self, job: Job, owner: str, attempt: Attempt, status: str, due_at: float | None = None,
               failure: bool = False) -> bool:
        def work(conn):
            conn.execute(
                "INSERT INTO attempts (job_id, at, outcome, http_status, zoom_code, message, next_at, duration_ms, "
                "sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, attempt.at, attempt.outcome, attempt.http_status, attempt.zoom_code, attempt.message,
                 attempt.next_at, attempt.duration_ms, json.dumps(attempt.sent)))
            cur = conn.execute(
                "UPDATE jobs SET status = ?, due_at = COALESCE(?, due_at), lease_owner = '', lease_until = 0, "
                "failures = failures + ?, last_message = ?, updated_at = ? "
                "WHERE id = ? AND lease_owner = ? AND status = 'running'",
                (status, due_at, int(failure), attempt.message, attempt.at, job.id, owner))
            return cur.rowcount == 1

        return self._write(work)

    def reserve_slot(self, account: str, rate: float, now: float, margin: float = 0.025) -> float:
        per_window = max(1, int(rate))
        window = per_window / rate  # seconds that per_window calls may take (1 s for whole rates)

        def work(conn):
            row = conn.execute("SELECT slot FROM pacing WHERE account = ? ORDER BY slot DESC LIMIT 1 OFFSET ?",
                               (account, per_window - 1)).fetchone()
            slot = max(now, row["slot"] + window + margin) if row else now
            conn.execute("INSERT INTO pacing (account, slot) VALUES (?, ?)", (account, slot))
            conn.execute("DELETE FROM pacing WHERE account = ? AND slot < ?", (account, now - 2 * window - 1))
            return slot

        return self._write(work)

    def lease_owners(self) -> set[str]:
        rows = self._conn().execute("SELECT DISTINCT lease_owner FROM jobs WHERE status = 'running'").fetchall()
        return {row[0] for row in rows}

    def release(self, owner: str, now: float) -> int:
        return self._write(lambda conn: conn.execute(
            "UPDATE jobs SET status = 'pending', due_at = ?, lease_owner = '', lease_until = 0, updated_at = ? "
            "WHERE status = 'running' AND lease_owner = ?", (now, now, owner)).rowcount)

    def retry(self, job_id: int | None, now: float, deadline: float) -> int:
        def work(conn):
            sql = ("UPDATE jobs SET status = 'pending', due_at = ?, deadline = ?, failures = 0, updated_at = ? "
                   "WHERE status = 'dead'")
            if job_id is None:
                return conn.execute(sql, (now, deadline, now)).rowcount
            return conn.execute(sql + " AND id = ?", (now, deadline, now, job_id)).rowcount

        return self._write(work)

    def prune(self, before: float) -> int:
        return self._write(lambda conn: conn.execute(
            "DELETE FROM deliveries WHERE received_at < ? AND NOT EXISTS (SELECT 1 FROM jobs WHERE "
            "jobs.delivery_id = deliveries.id AND jobs.status IN ('pending', 'running'))", (before,)).rowcount)

    def history(self, meeting=None, since=None, status=None, limit=200) -> list[dict]:
        conn = self._conn()
        where, args = [], []
        if meeting:
            where.append("d.order_key IN (?, ?)")
            args += [f"meetings/{meeting}", f"webinars/{meeting}"]
        if since is not None:
            where.append("d.received_at >= ?")
            args.append(since)
        if status:
            where.append("EXISTS (SELECT 1 FROM jobs s WHERE s.delivery_id = d.id AND s.status = ?)")
            args.append(status)
        sql = "SELECT * FROM deliveries d" + (" WHERE " + " AND ".join(where) if where else "")
        rows = conn.execute(sql + " ORDER BY d.id DESC LIMIT ?", (*args, limit)).fetchall()
        out = []
        for d in rows:
            jobs = []
            for j in conn.execute("SELECT * FROM jobs WHERE delivery_id = ? ORDER BY seq", (d["id"],)):
                attempts = [dict(a, sent=json.loads(a["sent"])) for a in
                            conn.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY id", (j["id"],))]
                job = {k: j[k] for k in ("id", "status", "due_at", "deadline", "attempts", "failures", "last_message",
                                         "confirmed_at", "order_key")}
                job["action"] = json.loads(j["action"])
                job["attempt_log"] = attempts
                jobs.append(job)
            out.append({"id": d["id"], "event": d["event"], "event_ts": d["event_ts"], "order_key": d["order_key"],
                        "received_at": d["received_at"], "dedup_key": d["dedup_key"],
                        "verdicts": json.loads(d["verdicts"]), "body": json.loads(d["body"]), "jobs": jobs})
        return out

    def counts(self) -> dict:
        conn = self._conn()
        out = {"deliveries": conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]}
        for status in ("pending", "running", "done", "dead", "skipped"):
            out[status] = 0
        for row in conn.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status"):
            out[row["status"]] = row["n"]
        return out

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _job(row) -> Job:
    return Job(id=row["id"], delivery_id=row["delivery_id"], action=PlannedAction.from_dict(json.loads(row["action"])),
               event_ts_ms=row["event_ts"], deadline=row["deadline"], attempts=row["attempts"],
               status=row["status"], lease_owner=row["lease_owner"], failures=row["failures"])
