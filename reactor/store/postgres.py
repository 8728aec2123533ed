"""The shared store: PostgreSQL through a psycopg 3 connection pool.

Claims take `FOR UPDATE SKIP LOCKED`, dedup is a unique constraint with ON CONFLICT DO NOTHING,
pacing is serialised per account by its row's lock (one upsert), and committed work is
announced with NOTIFY so every dispatcher wakes at once (polling is only the fallback).
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConfigError, SchemaError, StoreError
from ..logs import log
from ..delivery import Accepted
from .schema import SCHEMA_VERSION, delivery_row, job_rows, migrations
from .sql import _SWEEP, SQLStore, _inbox_row

CHANNEL = "reactor_jobs"
# A group commit in one statement (one round trip, however many deliveries share the commit): the
# new deliveries, their jobs, and what was stored.
_ACCEPT_ALL = """
WITH d AS (
    INSERT INTO deliveries (id, dedup_key, event, event_ts, order_key, instance, received_at, topic, account, body,
                            verdicts)
    SELECT coalesce(x.id, nextval(pg_get_serial_sequence('inbox', 'seq'))), x.dedup_key, x.event, x.event_ts,
           x.order_key, x.instance, x.received_at, x.topic, x.account, x.body, x.verdicts
    FROM jsonb_to_recordset(%s::jsonb) AS x(id bigint, dedup_key text, event text, event_ts bigint, order_key text,
                                            instance text, received_at double precision, topic text,
                                            account text, body text, verdicts text)
    ON CONFLICT (dedup_key) DO NOTHING
    RETURNING id, dedup_key
), j AS (
    INSERT INTO jobs (delivery_id, seq, rule, kind, action, order_key, account, instance, event_ts, status, due_at,
                      deadline, updated_at)
    SELECT d.id, x.seq, x.rule, x.kind, x.action, x.order_key, x.account, x.instance, x.event_ts, 'pending', x.due_at,
           x.deadline, x.due_at
    FROM jsonb_to_recordset(%s::jsonb) AS x(dedup_key text, seq integer, rule text, kind text, action text,
                                             order_key text, account text, instance text, event_ts bigint,
                                             due_at double precision, deadline double precision)
    JOIN d ON d.dedup_key = x.dedup_key
    RETURNING id, delivery_id, seq
)
SELECT d.dedup_key, d.id,
       coalesce((SELECT json_agg(j.id ORDER BY j.seq) FROM j WHERE j.delivery_id = d.id), '[]') AS job_ids
FROM d"""
CONNECT_SECONDS = 2      # a connection not had in this time fails the request: 503 inside Zoom's 3 s
CHECK_IDLE = 1.0         # a pooled connection idle longer than this is pinged before use (one that just worked is not)
CANCEL_GRACE = 0.25      # s a statement cancelled at its deadline has to come back before its connection is shut
PING_LOCK_WAIT = 0.5     # s readiness waits for the inbox's lock (autovacuum's brief locks are not an outage)
WATCH_EVERY = 0.05       # s between the watch's looks at the statements it holds to their deadlines
# A server that vanished without closing its connections (a managed database's failover, a network that drops
# packets) is noticed by TCP, not by a statement: within a minute on an idle connection (the LISTEN one; keepalives)
# and 30 s on one waiting for an answer (tcp_user_timeout), instead of the systems' defaults of over two hours and
# about fifteen minutes, during which a dispatcher or the ingest waits. A DATABASE_URL that sets any keeps its own.
TCP_DEFAULTS = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3",
                "tcp_user_timeout": "30000"}


class PostgresStore(SQLStore):
    claim_lock = "FOR UPDATE SKIP LOCKED"
    starts_without_it = True  # see Store

    def __init__(self, url: str, max_size: int = 16):
        super().__init__()
        self.url = url
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as exc:  # libpq quotes what it could not read, which may be the password: hidden
            userinfo = url.partition("://")[2].rpartition("@")[0]
            said = re.sub(r'"([^"]*)"', lambda m: '"<hidden>"' if m.group(1) and m.group(1) in userinfo else m.group(0),
                          _short(exc))
            raise ConfigError(f"DATABASE_URL is not a PostgreSQL URL libpq can read: {said} (postgresql://user:"
                              f"password@host:port/database?parameter=value; percent-encode special characters)"
                              ) from None
        self._conninfo = make_conninfo(url, **{k: v for k, v in TCP_DEFAULTS.items() if k not in given})
        self.max_size = max_size
        self._pool: ConnectionPool | None = None
        self._watcher: _Watch | None = None
        self._asking = threading.local()  # .deadline: the asking thread's, for the pool's check
        self._pid = 0
        self._lock = threading.Lock()

    def _check_if_idle(self, conn) -> None:
        """The pool's check: ping a connection idle over CHECK_IDLE s (after a database restart the pool's
        connections are dead, and are replaced here rather than failing a request). A connection used within
        the last second skips the round trip; should it fail anyway, the request answers 503 and the pool
        drops it. The ping is held to the asking request's deadline (see _Watch): a stalled server or network
        must not keep a webhook past Zoom's 3 s before its statement has even begun."""
        if time.monotonic() - getattr(conn, "_reactor_used", 0.0) > CHECK_IDLE:
            with self._watcher.held_to(conn, self._asking.deadline):
                ConnectionPool.check_connection(conn)

    def _get_pool(self) -> ConnectionPool:
        """The pool of this process, and the watch on its statements, made on first use (so never carried
        across fork)."""
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pid = os.getpid()
                    self._watcher = _Watch()
                    self._pool = ConnectionPool(
                        self._conninfo, min_size=1, max_size=self.max_size, open=True, timeout=CONNECT_SECONDS,
                        kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": CONNECT_SECONDS},
                        check=self._check_if_idle, reconnect_timeout=0, name="reactor")
        return self._pool

    @contextmanager
    def _connection(self, deadline: float | None = None):
        """A pooled connection, waited for until `deadline` (time.monotonic()), by default CONNECT_SECONDS.
        Past the deadline a connection ready in the pool is still taken; none is waited for."""
        if deadline is None:
            deadline = time.monotonic() + CONNECT_SECONDS
        wait = max(0.001, deadline - time.monotonic())
        self._asking.deadline = deadline
        try:
            with self._get_pool().connection(timeout=wait) as conn:
                yield conn
                conn._reactor_used = time.monotonic()
        except PoolTimeout:
            raise StoreError(f"PostgreSQL did not give a connection within {wait:.1f} s") from None
        except psycopg.errors.QueryCanceled:
            raise StoreError("PostgreSQL did not finish in time and the statement was cancelled (a lock held on "
                             "reactor's tables, e.g. by a migration, or an overloaded server)") from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL failed: {_short(exc)}") from None

    @contextmanager
    def transaction(self, durable: bool = True, deadline: float | None = None):
        with self._connection(deadline) as conn:
            with conn.transaction():
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit = off", prepare=True)
                yield conn

    @contextmanager
    def group_transaction(self, deadline: float):
        """append_all is one INSERT, and on an autocommit connection one statement is its own durable
        transaction: no BEGIN and COMMIT round trips on the acknowledgement's path. The statement is held to
        `deadline` (see _Watch): a lock or a stalled server or network fails it, not the webhooks' 3 s."""
        with self._connection(deadline) as conn:
            with self._watcher.held_to(conn, deadline):
                yield conn

    @contextmanager
    def reading(self):
        with self._connection() as conn:
            yield conn

    def run(self, conn, sql: str, params: tuple = ()):
        return conn.execute(sql.replace("?", "%s"), params, prepare=True)

    def accept_all(self, conn, items) -> list[Accepted]:
        """The whole group commit in one statement (_ACCEPT_ALL), plus one for earlier duplicates."""
        firsts = {}
        for delivery_id, delivery, actions, deadline in items:
            firsts.setdefault(delivery.dedup_key, (delivery_id, delivery, actions, deadline))
        deliveries = [delivery_row(delivery, delivery_id) for delivery_id, delivery, _, _ in firsts.values()]
        jobs = [job for item in firsts.values() for job in job_rows(*item[1:])]
        new = {row["dedup_key"]: (row["id"], tuple(row["job_ids"]))
               for row in conn.execute(_ACCEPT_ALL, (json.dumps(deliveries), json.dumps(jobs)), prepare=True)}
        known = {}
        if len(new) < len(firsts):  # duplicates of deliveries stored before
            known = {row["dedup_key"]: row["id"] for row in conn.execute(
                "SELECT dedup_key, id FROM deliveries WHERE dedup_key = ANY(%s)", ([k for k in firsts if k not in new],))}
        results = []
        for _, delivery, _, _ in items:
            if delivery.dedup_key in new:
                delivery_id, job_ids = new.pop(delivery.dedup_key)
                known[delivery.dedup_key] = delivery_id
                self.confirm(conn, delivery)
                results.append(Accepted(delivery_id, False, job_ids))
            else:
                results.append(Accepted(known[delivery.dedup_key], True))
        return results

    def append_all(self, conn, items) -> list[int]:
        """One statement for the whole group commit (rows are numbered and returned in the order given)."""
        columns = zip(*((at, body, key, account, order_key) for body, key, account, at, order_key in items))
        return [row["seq"] for row in conn.execute(
            "INSERT INTO inbox (received_at, body, dedup_key, account, order_key) "
            "SELECT x.received_at, x.body, x.dedup_key, x.account, x.order_key "
            "FROM unnest(%s::double precision[], %s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY "
            "AS x(received_at, body, dedup_key, account, order_key, n) ORDER BY x.n RETURNING seq",
            [list(column) for column in columns], prepare=True)]

    def sweep(self, received_before: float, limit: int, decide):
        """Rows locked for the whole transaction, skipping rows another sweep holds: concurrent sweeps (several
        workers with REACTOR_INGEST=off) decide disjoint rows."""
        with self.transaction(durable=False) as conn:
            rows = self.run(conn, _SWEEP + " FOR UPDATE SKIP LOCKED", (received_before, limit)).fetchall()
            return self.ingest_in(conn, decide([_inbox_row(r) for r in rows]))

    def announce(self, conn) -> None:
        conn.execute(f"NOTIFY {CHANNEL}")

    def migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('reactor-migrate'))")
            conn.execute("CREATE TABLE IF NOT EXISTS reactor_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) AS v FROM reactor_schema").fetchone()
            version = row["v"] or 0
            if version > SCHEMA_VERSION:
                raise SchemaError(f"the database has schema version {version}, newer than this reactor "
                                  f"({SCHEMA_VERSION}): upgrade reactor")
            for step in migrations("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", postgres=True)[version:]:
                conn.execute(step)
                version += 1
                conn.execute("INSERT INTO reactor_schema (version) VALUES (%s)", (version,))

    def check_schema(self) -> None:
        with self.reading() as conn:
            exists = conn.execute("SELECT to_regclass('reactor_schema') AS t").fetchone()["t"]
            version = conn.execute("SELECT max(version) AS v FROM reactor_schema").fetchone()["v"] if exists else None
        if version != SCHEMA_VERSION:
            found = "no reactor schema" if version is None else f"schema version {version}"
            raise SchemaError(f"the database has {found}; this reactor needs version {SCHEMA_VERSION}: "
                              f"run `python -m reactor migrate` (the Procfile's release: step)")

    def clock(self) -> float:
        with self.reading() as conn:
            return float(conn.execute("SELECT extract(epoch FROM clock_timestamp()) AS t", prepare=True).fetchone()["t"])

    def ping(self) -> None:
        """Ready means able to append: the lock an INSERT into the inbox takes, had within PING_LOCK_WAIT. A
        `SELECT 1` answered while a migration's waiting ALTER TABLE, or a LOCK held by hand, made every
        webhook a 503."""
        with self.transaction() as conn:
            conn.execute(f"SET LOCAL lock_timeout = '{int(PING_LOCK_WAIT * 1000)}ms'")
            conn.execute("LOCK TABLE inbox IN ROW EXCLUSIVE MODE")

    def listen(self, wake) -> None:
        """A thread holding one LISTEN connection; reconnects with back-off when the server goes away."""

        def loop():
            delay = 0.5
            while True:
                try:
                    with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_SECONDS) as conn:
                        conn.execute(f"LISTEN {CHANNEL}")
                        delay = 0.5
                        wake()  # work may have been committed while we were not listening
                        for _ in conn.notifies():
                            wake()
                except psycopg.Error as exc:
                    log("LISTEN connection lost; polling until it is back", 30, error=_short(exc))
                time.sleep(delay)
                delay = min(delay * 2, 10)

        threading.Thread(target=loop, name="reactor-listen", daemon=True).start()

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None


class _Watch:
    """Holds statements on the acknowledgement's path to their deadline, from one thread per process.

    A statement still running at its deadline is cancelled (a lock held by a migration or by hand, an
    overloaded server: PostgreSQL answers with an error and stores nothing); if no answer has come back
    CANCEL_GRACE later (the server or the network is stalled, and the cancel may not even arrive), the
    connection's socket is shut, which ends the wait at once; the pool then drops that connection. Either
    way the webhooks of that group commit get their 503 within Zoom's 3 s and Zoom sends them again. A
    statement the server had already committed when its connection was shut is stored; its retry is a
    duplicate, and acts once."""

    def __init__(self):
        self._held: dict[int, tuple[float, object]] = {}  # id(connection) -> (deadline, connection), one per hold
        self._busy = threading.Event()  # set while anything is held
        self._closed = False
        threading.Thread(target=self._run, name="reactor-statement-deadlines", daemon=True).start()

    @contextmanager
    def held_to(self, conn, deadline: float):
        self._held[id(conn)] = (deadline, conn)
        if not self._busy.is_set():
            self._busy.set()
        try:
            yield
        finally:
            self._held.pop(id(conn), None)

    def close(self) -> None:
        self._closed = True
        self._busy.set()

    def _run(self) -> None:
        stopping: set[int] = set()  # id()s of the holds being stopped, each by its own thread
        while not self._closed:
            self._busy.wait()
            time.sleep(WATCH_EVERY)
            if not self._held:
                self._busy.clear()
                if self._held:  # held between the look and the clear
                    self._busy.set()
                continue
            now = time.monotonic()
            try:
                for key, hold in list(self._held.items()):
                    if now >= hold[0] and id(hold) not in stopping:  # a stall expires many at once: stop them together
                        stopping.add(id(hold))
                        threading.Thread(target=self._stop, args=(key, hold, stopping), daemon=True).start()
            except Exception as exc:  # noqa: BLE001 (the watch must outlive any one look)
                log("the statement watch failed a look", 40, error=f"{type(exc).__name__}: {exc}"[:200])

    def _stop(self, key: int, hold: tuple[float, object], stopping: set) -> None:
        try:
            self._cancel_or_shut(key, hold)
        except Exception as exc:  # noqa: BLE001 (a connection lost meanwhile: nothing left to stop)
            log("stopping a late statement failed", 30, error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            stopping.discard(id(hold))

    def _cancel_or_shut(self, key: int, hold: tuple[float, object]) -> None:
        """Cancel the statement; shut the socket if it has not come back CANCEL_GRACE later. Only while this
        very hold lasts: a connection given back and held again is a new hold, with its own deadline. (A cancel
        that reaches the server after the statement ended can still stop the connection's next statement, and
        the statement can end between the last look and the shutdown: at worst one more 503, or a dispatcher's
        statement failed and made again; both only when the database is already stalled.)"""
        deadline, conn = hold
        until = time.monotonic() + CANCEL_GRACE
        if self._held.get(key) is not hold:
            return
        try:
            conn.cancel_safe(timeout=CANCEL_GRACE)
        except Exception:  # noqa: BLE001 (the cancel did not arrive: the socket is shut below)
            pass
        while time.monotonic() < until and self._held.get(key) is hold:
            time.sleep(0.01)
        if self._held.get(key) is not hold:
            return
        log("a statement on the webhook path did not come back after its cancel; closing its connection", 40,
            late_s=round(time.monotonic() - deadline, 2))
        try:
            with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, psycopg.Error):  # closed meanwhile (pgconn.socket: "the connection is lost")
            pass
        if self._held.get(key) is hold:
            self._held.pop(key, None)


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
