"""The store's portable queries, shared by the SQLite and PostgreSQL dialects (written with ? placeholders).

A dialect supplies connections and transactions, how it inserts a group commit's deliveries and jobs
(reactor/store/schema.py says which rows), and what SQL cannot say portably: how to serialise pacing
per account and how to wake other processes' dispatchers.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

from ..delivery import STATUSES, Accepted, Attempt, Job, NewDelivery
from ..events import Target
from ..plan import PlannedAction
from .contract import OPEN_CAP, OVERVIEW_CAP, Store
from .group_commit import GroupCommit

ID_SLACK = 10.0  # seconds: a delivery's id is given at its commit, within ACCEPT_WAIT of its receipt
MAX_ID = 2 ** 63 - 1
TOPIC_SCAN = 100_000  # deliveries whose topic one page of a topic search reads at most (newest first)
RECENT_CAUSES = 3600.0  # unconfirmed starts and unexpected stops are looked for this far back (bounds the scan)
STOP_GRACE = 20.0       # seconds a stopped stream waits for its meeting.ended before it counts as unexpected
PACING_MARGIN = 0.05  # calls are spaced (1 + margin) / rate apart: any 1 s window holds `rate` calls even
                      # when network and scheduling jitter shift them by up to margin seconds
# The next call's slot of an account: now, or its last slot plus the interval, whichever is later; the
# row's lock (either backend) serialises reservations across processes.
_RESERVE = ("INSERT INTO pacing (account, slot) VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET slot = "
            "CASE WHEN pacing.slot + ? > excluded.slot THEN pacing.slot + ? ELSE excluded.slot END RETURNING slot")

# The head of each order_key: no earlier pending/running job on the same key.
_IS_HEAD = """NOT EXISTS (SELECT 1 FROM jobs k WHERE k.order_key = j.order_key
                 AND k.status IN ('pending', 'running')
                 AND (k.event_ts, k.delivery_id, k.seq) < (j.event_ts, j.delivery_id, j.seq))"""

# Acknowledged before the job's delivery, about the same meeting (or not known: NULL), and not yet ingested:
# an earlier event on the job's order_key that another process's ingester has, so the job waits for it.
# Deliveries' ids are inbox seqs; the rows read are those older than the job's delivery still in the
# inbox, walked by the inbox's key: a few, unless an ingest is far behind.
_NOTHING_EARLIER_WAITS = """NOT EXISTS (SELECT 1 FROM inbox i WHERE i.seq < j.delivery_id
                 AND (i.order_key IS NULL OR j.order_key IN (i.order_key, 'notify:' || i.order_key)))"""

# Claim the first due job that heads its order_key. Two statements, each walking one index in order
# (jobs_due is (status, due_at), and so ordered by rowid within a due_at): leases that ran out first,
# then pending jobs by due time. One statement with an OR of both made the engine sort every due job
# on each claim, inside the write lock: slow exactly when a burst has queued thousands.
_CLAIM = f"""UPDATE jobs SET status = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1,
                updated_at = ?
             WHERE id = (SELECT j.id FROM jobs j
                         WHERE j.status = ? AND {{due}} <= ? AND j.confirmed_at IS NULL AND {_IS_HEAD}
                           AND {_NOTHING_EARLIER_WAITS}
                         ORDER BY {{due}}, j.id LIMIT 1 {{lock}})
             RETURNING *"""


# The actions a confirmation settles (see SQLStore.confirm): of one instance and kind, not yet confirmed,
# and either done or running, or pending/dead after a call that reached Zoom and was not refused outright.
_SETTLED = """SELECT j.id, j.status, j.last_message FROM jobs j
    WHERE j.order_key = ? AND j.instance = ? AND j.kind = ? AND j.confirmed_at IS NULL
      AND (j.status IN ('done', 'running')
           OR (j.status IN ('pending', 'dead')
               AND EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id AND a.duration_ms IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id AND a.http_status >= 300
                               AND a.http_status < 500 AND a.http_status <> 429
                               AND a.id = (SELECT max(b.id) FROM attempts b WHERE b.job_id = j.id
                                                    AND b.outcome <> 'requeued'))))"""


_CONFIRMED_MID_CALL = ("its dispatcher stopped during the call, and Zoom had confirmed the stream: the call worked, "
                       "not sent again")


class SQLStore(GroupCommit, Store):
    """Store semantics in SQL; subclasses are dialects."""

    claim_lock = ""  # PostgreSQL: FOR UPDATE SKIP LOCKED

    # -- what a dialect provides
    @contextmanager
    def transaction(self, durable: bool = True, deadline: float | None = None):
        """Yield a connection inside one transaction that holds the write lock where the engine has one;
        commit on exit, roll back on error, raise StoreError when the database fails. `durable=False`
        (the dispatcher's bookkeeping) may skip waiting for the disk where the engine allows: a
        crash of the machine, not of the process, may then forget it, and the job runs again.
        `deadline` (time.monotonic()) ends the wait for a connection or the lock; by default the
        backend's own limit, inside Zoom's 3 s."""
        raise NotImplementedError
        yield

    @contextmanager
    def reading(self):
        """Yield a connection for reads; raise StoreError when the database fails."""
        raise NotImplementedError
        yield

    def run(self, conn, sql: str, params: tuple = ()):
        """Execute one statement; return the cursor."""
        return conn.execute(sql, params)

    def announce(self, conn) -> None:
        """Tell other processes' dispatchers that jobs were committed (at commit)."""

    def accept_all(self, conn, items: list[tuple[int | None, NewDelivery, list[PlannedAction], float]]
                   ) -> list[Accepted]:
        """Each (id, delivery, actions, deadline), in order, inside the caller's transaction (see
        schema.delivery_row / job_rows), the delivery under `id` (None: the inbox sequence's next); of
        two with one dedup key, the second is the first's duplicate. Each new delivery is confirm()ed."""
        raise NotImplementedError

    def append_all(self, conn, items: list[tuple[str, str, str, float, str | None]]) -> list[int]:
        """append() for each (body, dedup_key, account, received_at, order_key) of a group commit, in order:
        their seqs."""
        raise NotImplementedError

    # -- the contract
    def accept(self, delivery: NewDelivery, actions: list[PlannedAction], deadline: float) -> Accepted:
        with self.transaction() as conn:
            accepted = self.accept_all(conn, [(None, delivery, actions, deadline)])[0]
            if accepted.job_ids:
                self.announce(conn)
        return accepted

    def sweep(self, received_before: float, limit: int, decide):
        """Read the rows, decide them, then ingest: on SQLite the write lock is not held while deciding (the
        request path's appends need it), so concurrent sweeps may decide the same rows; each is stored once."""
        with self.reading() as conn:
            rows = self.run(conn, _SWEEP, (received_before, limit)).fetchall()
        decided = decide([_inbox_row(r) for r in rows])
        return self.ingest(decided)

    def inbox_backlog(self) -> int:
        with self.reading() as conn:
            return self.run(conn, "SELECT count(*) AS n FROM inbox").fetchone()["n"]

    def ingest(self, decided):
        if not decided:
            return []
        # Not waiting for the disk: what it stores can be made again from the inbox rows it deletes, and a
        # crash of the machine that lost this commit lost their deletion with it (SQLite's WAL commits in order).
        with self.transaction(durable=False) as conn:
            return self.ingest_in(conn, decided)

    def ingest_in(self, conn, decided) -> list[Accepted | None]:
        """ingest() inside the caller's transaction."""
        if not decided:
            return []
        seqs = [item[0] for item in decided]
        received = {item[0]: item[1].received_at for item in decided}
        present = {r["seq"] for r in self.run(conn, f"DELETE FROM inbox WHERE seq IN ({', '.join('?' * len(seqs))}) "
                                              "RETURNING seq", tuple(seqs)).fetchall()}
        todo = [item for item in decided if item[0] in present]
        accepted = dict(zip((item[0] for item in todo), self.accept_all(conn, todo)))
        for seq, result in accepted.items():
            if result.duplicate:
                self.run(conn, "INSERT INTO duplicates (seq, delivery_id, received_at) VALUES (?, ?, ?)",
                         (seq, result.delivery_id, received[seq]))
        if any(result.job_ids for result in accepted.values()):
            self.announce(conn)
        return [accepted.get(seq) for seq in seqs]

    def confirm(self, conn, delivery: NewDelivery) -> None:
        """Zoom reports a live stream started (stopped) on a meeting instance: settle reactor's start
        (stop) actions of that instance as confirmed. Done and running ones are marked (a running one
        finishes as done, whatever its answer); pending and dead ones that reached Zoom are done, their
        retries cancelled, unless Zoom refused them outright (a 300 or a 4xx other than 429: that stream
        was started by someone else). Actions of other instances, or that never called Zoom, stay as
        they are."""
        if not (delivery.confirms and delivery.order_key and delivery.instance):
            return
        rows = self.run(conn, _SETTLED, (delivery.order_key, delivery.instance, delivery.confirms)).fetchall()
        why = f"confirmed by Zoom ({delivery.event}): the stream is {'live' if 'started' in delivery.event else 'off'}"
        for row in rows:
            settle = row["status"] in ("pending", "dead")
            if settle:
                self.run(conn, "INSERT INTO attempts (job_id, at, outcome, message, sent) VALUES (?, ?, 'confirmed', ?, ?)",
                         (row["id"], delivery.received_at, why + "; no further retries", "{}"))
            self.run(conn, "UPDATE jobs SET confirmed_at = ?, status = ?, last_message = ?, updated_at = ? WHERE id = ?",
                     (delivery.received_at, "done" if settle else row["status"],
                      why if settle else row["last_message"], delivery.received_at, row["id"]))

    def claim(self, owner: str, now: float, lease_seconds: float) -> Job | None:
        with self.transaction(durable=False) as conn:
            row = None
            for status, due in (("running", "j.lease_until"), ("pending", "j.due_at")):
                row = self.run(conn, _CLAIM.format(due=due, lock=self.claim_lock),
                               (owner, now + lease_seconds, now, status, now)).fetchone()
                if row:
                    break
        return _job(row) if row else None

    def superseded(self, job: Job) -> bool:
        with self.reading() as conn:
            return self.run(conn,
                "SELECT 1 FROM jobs WHERE order_key = ? AND event_ts > ? AND status IN ('running', 'done', 'dead') "
                "AND id != ? LIMIT 1", (job.action.order_key, job.event_ts_ms, job.id)).fetchone() is not None

    def failed_before(self, job: Job) -> bool:
        with self.reading() as conn:
            return self.run(conn,
                "SELECT 1 FROM jobs WHERE delivery_id = ? AND rule = ? AND seq < ? AND status IN ('dead', 'skipped') "
                "LIMIT 1", (job.delivery_id, job.action.rule, job.seq)).fetchone() is not None

    def finish(self, job: Job, owner: str, attempt: Attempt, status: str, due_at: float | None = None,
               failure: bool = False) -> bool:
        with self.transaction(durable=False) as conn:
            self.run(conn,
                "INSERT INTO attempts (job_id, at, outcome, http_status, zoom_code, message, next_at, duration_ms, "
                "sent, tracking_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, attempt.at, attempt.outcome, attempt.http_status, attempt.zoom_code, attempt.message,
                 attempt.next_at, attempt.duration_ms, json.dumps(attempt.sent), attempt.tracking_id))
            cur = self.run(conn,
                "UPDATE jobs SET status = CASE WHEN confirmed_at IS NULL THEN ? ELSE 'done' END, "
                "due_at = COALESCE(?, due_at), lease_owner = '', lease_until = 0, "
                "failures = failures + ?, last_message = ?, updated_at = ? "
                "WHERE id = ? AND lease_owner = ? AND status = 'running' AND attempts = ?",
                (status, due_at, int(failure), attempt.message, attempt.at, job.id, owner, job.attempts))
            held = cur.rowcount == 1
            if held and status == "pending":
                self.announce(conn)
            return held

    def reserve_slot(self, account: str, rate: float, now: float, margin: float = PACING_MARGIN) -> float:
        """One statement: the account's row is locked from the upsert to the commit only (on PostgreSQL a
        read, a write and an advisory lock held the pacing of every process's calls for five round trips,
        which at 200 calls a second left the dispatchers behind)."""
        interval = (1 + margin) / rate
        with self.transaction(durable=False) as conn:
            return float(self.run(conn, _RESERVE, (account, now, interval, interval)).fetchone()["slot"])  # SQLite: 100, not 100.0

    def extend(self, job: Job, owner: str, now: float, lease_seconds: float) -> bool:
        """Only the claim that `job` is: each claim counts one more attempt, so a sibling thread's claim of the
        same job (its lease ran out), under the same owner name, fences this one off.

        Durable, as it comes right before the call: the ingest that made the job (and its deletion of the
        inbox row) and the claim commit without waiting for the disk, and this commit's flush carries them
        (the log is written in order). Else a database crash after the call could bring the inbox row back,
        and its ingest again would send the call a second time."""
        with self.transaction(durable=True) as conn:
            return self.run(conn, "UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND status = 'running' "
                                  "AND attempts = ?", (now + lease_seconds, job.id, owner, job.attempts)).rowcount == 1

    def heartbeat(self, owner: str, now: float) -> None:
        with self.transaction(durable=False) as conn:
            self.run(conn, "INSERT INTO processes (owner, started_at, seen_at) VALUES (?, ?, ?) "
                           "ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at", (owner, now, now))

    def forget(self, owner: str) -> None:
        with self.transaction(durable=False) as conn:
            self.run(conn, "DELETE FROM processes WHERE owner = ?", (owner,))

    def release_dead(self, now: float, silent_for: float) -> dict[str, int]:
        alive = "SELECT owner FROM processes WHERE seen_at >= ?"
        with self.transaction(durable=False) as conn:
            dead = {row["lease_owner"]: row["n"] for row in self.run(conn,
                f"SELECT lease_owner, count(*) AS n FROM jobs WHERE status = 'running' AND lease_owner NOT IN ({alive}) "
                "GROUP BY lease_owner", (now - silent_for,)).fetchall()}
            if dead:  # a call Zoom confirmed meanwhile worked: done, not sent again (the others: due at once)
                self.run(conn,
                    "INSERT INTO attempts (job_id, at, outcome, message, sent) SELECT id, ?, 'confirmed', ?, '{}' "
                    f"FROM jobs WHERE status = 'running' AND confirmed_at IS NOT NULL AND lease_owner NOT IN ({alive})",
                    (now, _CONFIRMED_MID_CALL, now - silent_for))
                self.run(conn,
                    "UPDATE jobs SET status = CASE WHEN confirmed_at IS NULL THEN 'pending' ELSE 'done' END, due_at = ?, "
                    "lease_owner = '', lease_until = 0, updated_at = ? "
                    f"WHERE status = 'running' AND lease_owner NOT IN ({alive})", (now, now, now - silent_for))
                self.announce(conn)
            self.run(conn, "DELETE FROM processes WHERE seen_at < ?", (now - silent_for,))
            return dead

    def retry(self, job_ids: list[int] | None, now: float, deadline: float, note: str = "") -> int:
        which = "status = 'dead'" + ("" if job_ids is None else " AND id = ?")
        with self.transaction() as conn:
            count = 0
            for args in ([()] if job_ids is None else [(job_id,) for job_id in job_ids]):
                if note:
                    for row in self.run(conn, f"SELECT id FROM jobs WHERE {which}", args).fetchall():
                        self.run(conn, "INSERT INTO attempts (job_id, at, outcome, message, sent) "
                                       "VALUES (?, ?, 'requeued', ?, ?)", (row["id"], now, note, "{}"))
                count += self.run(conn, "UPDATE jobs SET status = 'pending', due_at = ?, deadline = ?, failures = 0, "
                                        f"updated_at = ? WHERE {which}", (now, deadline, now, *args)).rowcount
            if count:
                self.announce(conn)
            return count

    def dead_jobs(self, job_id: int | None = None) -> list[dict]:
        where, args = ("j.id = ?", (job_id,)) if job_id is not None else ("j.status = 'dead'", ())
        with self.reading() as conn:
            rows = self.run(conn,
                "SELECT j.id, j.status, j.kind, j.action, j.deadline, j.instance, j.order_key, "
                "EXISTS (SELECT 1 FROM deliveries e WHERE e.order_key = j.order_key AND j.instance <> '' "
                "        AND e.instance = j.instance AND e.event IN ('meeting.ended', 'webinar.ended')) AS instance_ended "
                f"FROM jobs j WHERE {where} ORDER BY j.id", args).fetchall()
        return [{**dict(row), "action": json.loads(row["action"]), "instance_ended": bool(row["instance_ended"])}
                for row in rows]

    def retry_chain(self, job_id: int, now: float, deadline: float) -> tuple[str | None, list[int]]:
        requeue = "UPDATE jobs SET status = 'pending', due_at = ?, deadline = ?, failures = 0, updated_at = ? WHERE "
        with self.transaction() as conn:
            head = self.run(conn, requeue + "id = ? AND status = 'dead' RETURNING delivery_id, rule, seq",
                            (now, deadline, now, job_id)).fetchone()
            if head is None:
                row = self.run(conn, "SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                return (row["status"] if row else None), []
            later = self.run(conn, requeue + "delivery_id = ? AND rule = ? AND seq > ? AND status IN ('dead', 'skipped') "
                             "RETURNING id, seq", (now, deadline, now, head["delivery_id"], head["rule"], head["seq"]))
            ids = [job_id] + [r["id"] for r in sorted(later.fetchall(), key=lambda r: r["seq"])]
            self.announce(conn)
            return "dead", ids

    def prune(self, before: float) -> int:
        with self.transaction() as conn:
            return self.run(conn,
                "DELETE FROM deliveries WHERE received_at < ? AND NOT EXISTS (SELECT 1 FROM jobs WHERE "
                "jobs.delivery_id = deliveries.id AND jobs.status IN ('pending', 'running'))", (before,)).rowcount

    def history(self, meeting=None, since=None, status=None, limit=200, account=None) -> list[dict]:
        where, args = [], []
        if account:
            where.append("d.account = ?")
            args.append(account)
        if meeting:
            where.append("d.order_key IN (?, ?)")
            args += [Target("meetings", meeting).key, Target("webinars", meeting).key]
        if since is not None:
            where.append("d.received_at >= ?")
            args.append(since)
        if status:
            where.append("EXISTS (SELECT 1 FROM jobs s WHERE s.delivery_id = d.id AND s.status = ?)")
            args.append(status)
        sql = "SELECT * FROM deliveries d" + (" WHERE " + " AND ".join(where) if where else "")
        with self.reading() as conn:
            return [self._full(conn, d) for d in self.run(conn, sql + " ORDER BY d.id DESC LIMIT ?", (*args, limit)).fetchall()]

    def _full(self, conn, d) -> dict:
        """A deliveries row with its verdicts, jobs and attempts, as history() gives it."""
        jobs = []
        for j in self.run(conn, "SELECT * FROM jobs WHERE delivery_id = ? ORDER BY seq", (d["id"],)).fetchall():
            attempts = [{**dict(a), "sent": json.loads(a["sent"])} for a in self.run(
                conn, "SELECT * FROM attempts WHERE job_id = ? ORDER BY id", (j["id"],)).fetchall()]
            job = {k: j[k] for k in ("id", "status", "due_at", "deadline", "attempts", "failures",
                                     "last_message", "confirmed_at", "order_key")}
            job["action"] = json.loads(j["action"])
            job["attempt_log"] = attempts
            jobs.append(job)
        return {"id": d["id"], "event": d["event"], "event_ts": d["event_ts"], "order_key": d["order_key"],
                "instance": d["instance"], "topic": d["topic"], "account": d["account"], "received_at": d["received_at"],
                "dedup_key": d["dedup_key"], "verdicts": json.loads(d["verdicts"]), "body": json.loads(d["body"]),
                "jobs": jobs}

    # -- the console's reads

    def console_overview(self, now: float, cap: int = OVERVIEW_CAP, open_cap: int = OPEN_CAP) -> dict:
        # `x || ''` groups by a value no index holds: else SQLite walks the index on event (status) to save a
        # sort, reading the whole table instead of the window's rows.
        out: dict = {}
        with self.reading() as conn:
            for name, seconds in (("hour", 3600), ("day", 86400)):
                since = now - seconds
                if name == "day" and out["hour"]["capped"]:
                    out[name] = out["hour"]  # the day's newest `cap` deliveries are the hour's: counted once
                    continue
                # the (cap + 1)-th newest delivery of the window, if it holds that many: count only those after it
                edge = self.run(conn, "SELECT received_at FROM deliveries WHERE received_at >= ? "
                                      "ORDER BY received_at DESC LIMIT 1 OFFSET ?", (since, cap)).fetchone()
                after, since = (">", edge["received_at"]) if edge is not None else (">=", since)
                first = self.run(conn, f"SELECT id FROM deliveries WHERE received_at {after} ? ORDER BY received_at "
                                       "LIMIT 1", (since,)).fetchone()
                out[name] = {
                    "capped": edge is not None, "since": since,
                    "deliveries": {r["event"]: r["n"] for r in self.run(conn,
                        f"SELECT event || '' AS event, count(*) AS n FROM deliveries WHERE received_at {after} ? "
                        "GROUP BY event || '' ORDER BY 1", (since,)).fetchall()},
                    # the jobs of those deliveries, by their ids (a range of jobs_delivery, no join)
                    "actions": {r["status"]: r["n"] for r in self.run(conn,
                        "SELECT status || '' AS status, count(*) AS n FROM jobs WHERE delivery_id >= ? "
                        "GROUP BY status || ''", (first["id"] if first else MAX_ID,)).fetchall()}}
            out["oldest_pending_due"] = self.run(conn, "SELECT min(due_at) AS t FROM jobs WHERE status = 'pending'"
                                                 ).fetchone()["t"]
            out["open"] = {status: self._count_to(conn, "jobs WHERE status = ?", (status,), open_cap)
                           for status in ("pending", "running", "dead")}
        out["cap"], out["open_cap"] = cap, open_cap
        return out

    def _count_to(self, conn, rows: str, args: tuple, cap: int) -> int:
        """count(*) of `rows` (FROM ... WHERE ...), or cap + 1 when there are more than cap: reads at most
        2 * cap + 1 rows (index entries when an index covers the WHERE)."""
        if self.run(conn, f"SELECT 1 FROM {rows} LIMIT 1 OFFSET ?", (*args, cap)).fetchone():
            return cap + 1
        return self.run(conn, f"SELECT count(*) AS n FROM {rows}", args).fetchone()["n"]

    def _filter(self, conn, event, since, until, q, account=None) -> tuple[list[str], list, str | None]:
        """The WHERE clauses (on deliveries d) of a console filter, their arguments, and how q was read.
        A time bound is also turned into an id bound (ids follow receipt within a commit's wait), so that
        walking ids newest first stops at the window's edge instead of reading the whole history."""
        where, args, search = [], [], None
        if event:
            where.append("d.event = ?")
            args.append(event)
        if account:
            where.append("d.account = ?")
            args.append(account)
        if since is not None:
            row = self.run(conn, "SELECT id FROM deliveries WHERE received_at >= ? ORDER BY received_at LIMIT 1",
                           (since - ID_SLACK,)).fetchone()
            where += ["d.id >= ?", "d.received_at >= ?"]
            args += [row["id"] if row else MAX_ID, since]
        if until is not None:
            row = self.run(conn, "SELECT id FROM deliveries WHERE received_at > ? ORDER BY received_at LIMIT 1",
                           (until + ID_SLACK,)).fetchone()
            if row:
                where.append("d.id < ?")
                args.append(row["id"])
            where.append("d.received_at <= ?")
            args.append(until)
        if q:
            if q.isdigit():
                search = "meeting"
                where.append("d.order_key IN (?, ?)")
                args += [Target("meetings", q).key, Target("webinars", q).key]
            elif self.run(conn, "SELECT 1 FROM deliveries WHERE instance = ? LIMIT 1", (q,)).fetchone():
                search = "uuid"
                where.append("d.instance = ?")
                args.append(q)
            else:
                search = "topic"
                where.append("lower(d.topic) LIKE ? ESCAPE '!'")
                args.append("%" + q.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
        return where, args, search

    def deliveries_page(self, before_id=None, limit=50, event=None, since=None, until=None, q=None,
                        account=None) -> dict:
        with self.reading() as conn:
            where, args, search = self._filter(conn, event, since, until, q, account)
            if before_id is not None:
                where.append("d.id < ?")
                args.append(before_id)
            floor = None
            if search == "topic":  # a substring has no index: read at most TOPIC_SCAN ids per page
                top = self.run(conn, "SELECT max(id) AS m FROM deliveries").fetchone()["m"] or 0
                floor = min(before_id if before_id is not None else MAX_ID, top + 1) - TOPIC_SCAN
                where.append("d.id >= ?")
                args.append(floor)
            rows = self.run(conn,
                "SELECT d.id, d.event, d.received_at, d.order_key, d.instance, d.topic, d.account, d.verdicts "
                "FROM deliveries d"
                + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY d.id DESC LIMIT ?",
                (*args, limit + 1)).fetchall()
            more, rows = len(rows) > limit, rows[:limit]
            scanned_to = None
            if floor is not None and not more and self.run(
                    conn, "SELECT 1 FROM deliveries WHERE id < ? LIMIT 1", (floor,)).fetchone():
                scanned_to = floor  # older deliveries remain unread: the next page reads on from here
            jobs: dict = {}
            if rows:
                marks = ", ".join("?" for _ in rows)
                for r in self.run(conn, f"SELECT delivery_id, status, count(*) AS n FROM jobs WHERE delivery_id IN "
                                        f"({marks}) GROUP BY delivery_id, status", tuple(r["id"] for r in rows)).fetchall():
                    jobs.setdefault(r["delivery_id"], {})[r["status"]] = r["n"]
        out = [{"id": r["id"], "event": r["event"], "received_at": r["received_at"], "order_key": r["order_key"],
                "instance": r["instance"], "topic": r["topic"], "account": r["account"], "jobs": jobs.get(r["id"], {}),
                "matched": [v["rule"] for v in json.loads(r["verdicts"]) if v.get("matched")]} for r in rows]
        return {"rows": out, "next": out[-1]["id"] if more else scanned_to, "search": search,
                "scanned_to": scanned_to}

    def delivery(self, delivery_id: int) -> dict | None:
        with self.reading() as conn:
            row = self.run(conn, "SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                repeated = self.run(conn, "SELECT d.*, r.received_at AS repeat_at FROM duplicates r "
                                    "JOIN deliveries d ON d.id = r.delivery_id WHERE r.seq = ?", (delivery_id,)).fetchone()
                if repeated is not None:
                    return {**self._full(conn, repeated), "duplicate": {"seq": delivery_id,
                                                                        "received_at": repeated["repeat_at"]}}
                waiting = self.run(conn, "SELECT received_at FROM inbox WHERE seq = ?", (delivery_id,)).fetchone()
                return {"id": delivery_id, "inbox": True, "received_at": waiting["received_at"]} if waiting else None
            return self._full(conn, row)

    def meeting_timeline(self, meeting: str, limit: int = 500) -> list[dict]:
        with self.reading() as conn:
            return [self._full(conn, d) for d in self.run(conn,
                "SELECT * FROM deliveries WHERE order_key IN (?, ?) ORDER BY event_ts, id LIMIT ?",
                (Target("meetings", meeting).key, Target("webinars", meeting).key, limit)).fetchall()]

    def rule_matches(self, since: float) -> dict[str, int]:
        with self.reading() as conn:
            return {r["rule"]: r["n"] for r in self.run(conn,
                "SELECT j.rule, count(DISTINCT j.delivery_id) AS n FROM deliveries d JOIN jobs j ON j.delivery_id = d.id "
                "WHERE d.received_at >= ? GROUP BY j.rule", (since,)).fetchall()}

    def dead_job_ids(self, event=None, since=None, until=None, q=None, limit=500, account=None) -> list[int]:
        with self.reading() as conn:
            where, args, _ = self._filter(conn, event, since, until, q, account)
            return [r["id"] for r in self.run(conn,
                "SELECT j.id FROM jobs j JOIN deliveries d ON d.id = j.delivery_id WHERE j.status = 'dead'"
                + "".join(" AND " + w for w in where) + " ORDER BY d.id DESC, j.seq LIMIT ?", (*args, limit)).fetchall()]

    def counts(self) -> dict:
        out = {"deliveries": 0, **dict.fromkeys(STATUSES, 0)}
        with self.reading() as conn:
            out["deliveries"] = self.run(conn, "SELECT count(*) AS n FROM deliveries").fetchone()["n"]
            for row in self.run(conn, "SELECT status, count(*) AS n FROM jobs GROUP BY status").fetchall():
                out[row["status"]] = row["n"]
        return out

    def outbox(self, now: float) -> dict:
        jobs = dict.fromkeys(STATUSES, 0)
        with self.reading() as conn:
            for row in self.run(conn, "SELECT status, count(*) AS n FROM jobs GROUP BY status").fetchall():
                jobs[row["status"]] = row["n"]
            oldest = self.run(conn, "SELECT min(event_ts) AS ts FROM jobs WHERE status IN ('pending', 'running')"
                              ).fetchone()["ts"]
            inbox = self.run(conn, "SELECT count(*) AS n FROM inbox").fetchone()["n"]
        return {"jobs": jobs, "oldest_pending_seconds": max(0.0, now - oldest / 1000) if oldest is not None else 0.0,
                "inbox": inbox}

    def alert_causes(self, now: float, confirm_timeout: float, since: float) -> list[dict]:
        columns = "j.id, j.rule, j.kind, j.order_key, j.instance, j.last_message, d.body"
        recent = max(since, now - RECENT_CAUSES)
        out = []
        with self.reading() as conn:
            rows = self.run(conn, f"""SELECT {columns} FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
                WHERE j.status = 'dead' AND j.kind <> 'alert' AND j.updated_at >= ?
                  AND NOT EXISTS (SELECT 1 FROM deliveries a WHERE a.dedup_key = 'alert:dead:' || j.id)
                ORDER BY j.id""", (since,)).fetchall()
            out += [{"cause": "dead", **dict(row)} for row in rows]
            if confirm_timeout > 0:  # due_at bounds the index range: a done job's last due time is before its end
                rows = self.run(conn, f"""SELECT {columns} FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
                    WHERE j.status = 'done' AND j.due_at >= ? AND j.kind = 'livestream.start'
                      AND j.confirmed_at IS NULL AND j.updated_at >= ? AND j.updated_at <= ?
                      AND EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id
                                  AND a.http_status >= 200 AND a.http_status < 300)
                      AND NOT EXISTS (SELECT 1 FROM deliveries a WHERE a.dedup_key = 'alert:unconfirmed:' || j.id)
                    ORDER BY j.id""", (recent - 600, recent, now - confirm_timeout)).fetchall()
                out += [{"cause": "unconfirmed", **dict(row)} for row in rows]
            rows = self.run(conn, """SELECT d.id, '' AS rule, d.event AS kind, d.order_key, d.instance,
                    '' AS last_message, d.body FROM deliveries d
                WHERE d.received_at >= ? AND d.received_at <= ? AND d.instance <> ''
                  AND d.event IN ('meeting.live_streaming_stopped', 'webinar.live_streaming_stopped')
                  AND EXISTS (SELECT 1 FROM jobs s WHERE s.order_key = d.order_key AND s.instance = d.instance
                              AND s.kind = 'livestream.start' AND s.status = 'done')
                  AND NOT EXISTS (SELECT 1 FROM jobs t WHERE t.order_key = d.order_key AND t.instance = d.instance
                                  AND t.kind = 'livestream.stop')
                  AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.order_key = d.order_key
                                  AND e.instance = d.instance AND e.event IN ('meeting.ended', 'webinar.ended'))
                  AND NOT EXISTS (SELECT 1 FROM deliveries a WHERE a.dedup_key = 'alert:stopped:' || d.id)
                ORDER BY d.id""", (recent, now - STOP_GRACE)).fetchall()
            out += [{"cause": "stopped", **dict(row)} for row in rows]
        for cause in out:
            cause["body"] = json.loads(cause["body"]) if isinstance(cause["body"], str) else cause["body"]
        return out

_SWEEP = "SELECT seq, received_at, body, dedup_key, account FROM inbox WHERE received_at < ? ORDER BY seq LIMIT ?"


def _inbox_row(r) -> tuple[int, float, str, str, str]:
    return r["seq"], r["received_at"], r["body"], r["dedup_key"], r["account"]


def _job(row) -> Job:
    return Job(id=row["id"], delivery_id=row["delivery_id"], action=PlannedAction.from_dict(json.loads(row["action"])),
               event_ts_ms=row["event_ts"], deadline=row["deadline"], attempts=row["attempts"],
               status=row["status"], lease_owner=row["lease_owner"], failures=row["failures"], seq=row["seq"])
