"""The store contract. Each implementation (SQLite, PostgreSQL) passes tests/test_store_contract.py.

The values it takes and gives (NewDelivery, Accepted, Job, Attempt) are the core's, in
reactor/delivery.py; this file states what each method must do, and what must be atomic.
"""
from __future__ import annotations

import time

from ..delivery import STATUSES, Accepted, Attempt, Job, NewDelivery
from ..plan import PlannedAction

__all__ = ["STATUSES", "Accepted", "Attempt", "Job", "NewDelivery", "Store", "OVERVIEW_CAP", "OPEN_CAP"]

OVERVIEW_CAP = 10_000  # deliveries one console overview window counts at most, newest first: a refresh's cost is
                       # bounded whatever the ingest rate
OPEN_CAP = 100_000     # open actions of one status the overview counts at most


class Store:
    """What reactor needs from its database. Every method is safe to call from many threads and,
    on a shared database, from many processes at once."""

    # A database across the network may be away for a moment (a restart, a failover, maintenance): a
    # process that cannot reach it at start-up starts anyway and answers 503 until it is back. The
    # embedded file has no such moments: failing to open it is a setup error, and stops start-up.
    starts_without_it = False

    def migrate(self) -> None:
        """Create or upgrade the schema. Idempotent."""
        raise NotImplementedError

    def check_schema(self) -> None:
        """Before serving: the embedded store migrates itself; a shared one raises SchemaError
        (saying to run `python -m reactor migrate`) unless its schema is exactly this reactor's."""
        raise NotImplementedError

    def listen(self, wake) -> None:
        """Call wake() whenever another process commits due work (optional: polling is the fallback)."""

    def maintain(self) -> None:
        """Housekeeping the engine needs now and then (SQLite: a WAL checkpoint); called every few
        seconds by each process, off the request path."""

    def ping(self) -> None:
        """Raise StoreError unless the database answers now (readiness)."""
        raise NotImplementedError

    def append(self, body: str, dedup_key: str, account: str, received_at: float, order_key: str | None = None) -> int:
        """Append a verified delivery (its redacted body, dedup key and account name, and the order key of the
        meeting it is about: "" for none, None for not known) to the inbox, durably committed before
        returning, and return its seq: the id its delivery will have. Concurrent appends share a commit.
        Raise StoreError when it could not be committed (within 2 s)."""
        raise NotImplementedError

    def sweep(self, received_before: float, limit: int, decide) -> list[Accepted | None]:
        """Ingest up to `limit` inbox rows received before the given time, oldest first: `decide` gets their
        (seq, received_at, body, dedup_key, account) and returns what ingest() takes for them; the answer is
        ingest()'s for what it returned. Each row is stored once, however many sweeps run at once; on a
        shared database concurrent sweeps decide disjoint rows (the rows are locked, and locked ones skipped)."""
        raise NotImplementedError

    def inbox_backlog(self) -> int:
        """How many appended deliveries wait to be ingested."""
        raise NotImplementedError

    def ingest(self, decided: list[tuple[int, NewDelivery, list[PlannedAction], float]]) -> list[Accepted | None]:
        """For each (seq, delivery, actions, deadline), in ONE durable transaction: remove the inbox
        row and accept the delivery under id `seq` (a duplicate stores only its seq beside the first).
        A seq no longer in the inbox (another ingester took it) stores nothing and gives None: each row
        is ingested exactly once, however many ingesters race for it."""
        raise NotImplementedError

    def accept(self, delivery: NewDelivery, actions: list[PlannedAction], deadline: float) -> Accepted:
        """Store a delivery and its jobs in ONE transaction, durably committed before returning, without
        the inbox (reactor's own deliveries: alerts).

        If a delivery with the same dedup_key exists, store nothing and return duplicate=True with
        the first one's id: concurrent calls with one key store exactly one delivery. New jobs are
        pending and due at once. A delivery with `confirms` marks the newest done job of that kind on
        its order_key as confirmed. Raise StoreError when nothing could be committed."""
        raise NotImplementedError

    def claim(self, owner: str, now: float, lease_seconds: float) -> Job | None:
        """Atomically lease one due job to `owner` until now + lease_seconds, or return None.

        Due: pending with due_at <= now, or running with an expired lease (its dispatcher died), unless
        Zoom confirmed it meanwhile (confirmed_at: the call worked; its dispatcher records it, or
        release_dead does).
        Per order_key, only the head may be claimed: no other pending or running job on that key
        comes earlier in (event_ts, delivery id, position), and no inbox row appended before the job's
        delivery about the same meeting (or with no order key known) is still waiting to be ingested: it
        may be an earlier event on that key, taken by another process's ingester. Two owners never hold
        one job at once."""
        raise NotImplementedError

    def superseded(self, job: Job) -> bool:
        """True when a job from a LATER event on the same order_key already ran or is running:
        then this older job must not run (a stop from an earlier event never follows a later start)."""
        raise NotImplementedError

    def failed_before(self, job: Job) -> bool:
        """True when an earlier action of the same rule for the same delivery is dead or skipped:
        a start must not follow a configure that failed (it would stream to the old target)."""
        raise NotImplementedError

    def finish(self, job: Job, owner: str, attempt: Attempt, status: str, due_at: float | None = None,
               failure: bool = False) -> bool:
        """Record `attempt` and move the job to `status` (pending with due_at for a retry), atomically;
        `failure` adds one to the job's failures.

        The status changes only while `owner` still holds the lease by this claim (`job.attempts`);
        returns False when it no longer does (another dispatcher, or another thread of this one, took
        the job over), in which case only the attempt is recorded."""
        raise NotImplementedError

    def reserve_slot(self, account: str, rate: float, now: float, margin: float = 0.05) -> float:
        """Reserve the next call time for `account`, at least (1 + margin) / rate after the previous
        one across every process sharing this store, so that no 1-second window holds more than
        `rate` calls even with `margin` seconds of jitter; return it (>= now)."""
        raise NotImplementedError

    def extend(self, job: Job, owner: str, now: float, lease_seconds: float) -> bool:
        """Immediately before a call to Zoom: extend `owner`'s lease on `job` to now + lease_seconds and
        return True, or return False when `owner` no longer holds it by this claim (`job.attempts`: released
        as dead, or claimed again after it expired, by another dispatcher or by another thread under the same
        owner name), in which case the call must not be made."""
        raise NotImplementedError

    def heartbeat(self, owner: str, now: float) -> None:
        """Record that the dispatching process `owner` is alive at `now` (every few seconds)."""
        raise NotImplementedError

    def forget(self, owner: str) -> None:
        """`owner` stops cleanly: remove its heartbeat (its leases, if any, are released by the others)."""
        raise NotImplementedError

    def clock(self) -> float:
        """The database's clock, seconds since the epoch: the one clock every process sharing the store reads
        alike (heartbeats are dated and judged by it). The embedded store's is this host's."""
        return time.time()

    def release_dead(self, now: float, silent_for: float) -> dict[str, int]:
        """Make every job leased to an owner whose heartbeat is older than `silent_for` seconds (or that
        has none) pending and due now, and forget those owners; return {owner: jobs released}. Their
        in-flight calls may be repeated: delivery is at least once. A job Zoom confirmed during its call
        is done instead, with a 'confirmed' attempt saying it was not sent again."""
        raise NotImplementedError

    def retry(self, job_ids: list[int] | None, now: float, deadline: float, note: str = "") -> int:
        """Re-queue these dead jobs (or, with None, every dead job) as pending now, with a new deadline
        and no failures counted; return how many (jobs no longer dead are left as they are). With a
        `note` (who asked, from where), each re-queued job's history gains an attempt with outcome
        "requeued" and that message, in the same transaction."""
        raise NotImplementedError

    def dead_jobs(self, job_id: int | None = None) -> list[dict]:
        """Every dead job (or the one job `job_id`, whatever its status), oldest first, as a plain dict
        with what an operator must see before retrying it: id, status, kind, action (the planned call,
        secrets as references), deadline (its original one), instance, and `instance_ended`: whether
        a meeting.ended / webinar.ended of its meeting instance has been received."""
        raise NotImplementedError

    def retry_chain(self, job_id: int, now: float, deadline: float) -> tuple[str | None, list[int]]:
        """Re-queue dead job `job_id` together with the later jobs of the same rule and delivery that are
        dead or skipped (a start skipped after its configure failed comes back with it), all pending
        now with a new deadline and no failures counted, in ONE transaction.

        Return (the job's status before the call, or None when there is no such job; the ids re-queued,
        `job_id` first, then in plan order). A job that is not dead is left as it is: ("done", [])."""
        raise NotImplementedError

    def prune(self, before: float) -> int:
        """Delete deliveries received before `before` whose jobs are all finished; return how many."""
        raise NotImplementedError

    def history(self, meeting: str | None = None, since: float | None = None,
                status: str | None = None, limit: int = 200, account: str | None = None) -> list[dict]:
        """Deliveries (newest first) with their verdicts, jobs and attempts, as plain dicts; `account`: only
        those that came through the account of that name."""
        raise NotImplementedError

    # -- the console's reads: each answers from indexes, whatever the size of the history

    def console_overview(self, now: float, cap: int = OVERVIEW_CAP, open_cap: int = OPEN_CAP) -> dict:
        """{"hour": {...}, "day": {...}, "oldest_pending_due": due_at or None, "open": {...}, "cap": cap,
        "open_cap": open_cap}. Each window holds "deliveries" {event: n} received in the last hour (day) and
        "actions" {status: n} of the jobs of those deliveries (taken by delivery id: from the first delivery
        counted on). A window counts at most its newest `cap` deliveries, so that a refresh costs the same
        whatever the ingest rate: when it holds more, "capped" is true and "since" is the receipt time after
        which the counted ones arrived (else "since" is the window's start); the day is then the hour's
        figures. "open" is {"pending": n, "running": n, "dead": n} over the whole history, each n at most
        open_cap + 1 (more than open_cap)."""
        raise NotImplementedError

    def deliveries_page(self, before_id: int | None = None, limit: int = 50, event: str | None = None,
                        since: float | None = None, until: float | None = None, q: str | None = None,
                        account: str | None = None) -> dict:
        """One page of deliveries, newest first, with ids below `before_id` (keyset paging, never OFFSET):
        {"rows": [summary], "next": the before_id of the next page or None, "search": how q was read}.
        `q` is a meeting or webinar id (all digits: "meeting"), else a meeting instance uuid when one is
        stored ("uuid"), else a case-insensitive substring of the topic ("topic"): no index holds substrings, so
        one page reads at most the 100,000 newest ids below `before_id`; when it stops there with older
        deliveries unread, "scanned_to" is that id and "next" continues from it. A summary has id, event,
        received_at, order_key, instance, topic, account, matched (rule names) and jobs ({status: n}).
        `account`: only the deliveries that came through the account of that name (no index: a rare
        account's page walks the newest deliveries until it has its rows)."""
        raise NotImplementedError

    def delivery(self, delivery_id: int) -> dict | None:
        """One delivery as history() gives it, or None."""
        raise NotImplementedError

    def meeting_timeline(self, meeting: str, limit: int = 500) -> list[dict]:
        """Every delivery on one meeting or webinar id (as history() gives them), oldest event first."""
        raise NotImplementedError

    def rule_matches(self, since: float) -> dict[str, int]:
        """{rule name: deliveries received since `since` for which the rule planned an action}."""
        raise NotImplementedError

    def dead_job_ids(self, event: str | None = None, since: float | None = None, until: float | None = None,
                     q: str | None = None, limit: int = 500, account: str | None = None) -> list[int]:
        """The ids of dead jobs of the deliveries deliveries_page() would list with this filter (any page),
        newest delivery first, at most `limit`."""
        raise NotImplementedError

    def counts(self) -> dict:
        """{"deliveries": n, "pending": n, "running": n, "done": n, "dead": n, "skipped": n}."""
        raise NotImplementedError

    def outbox(self, now: float) -> dict:
        """The outbox at `now`, for monitoring (read at every scrape, so cheap): {"jobs": {status: n} for
        every status in STATUSES, "oldest_pending_seconds": seconds from the event of the oldest pending or
        running job to `now` (0 when there is none), "inbox": deliveries waiting to be ingested}. Counts every
        process's jobs of the shared store."""
        raise NotImplementedError

    def alert_causes(self, now: float, confirm_timeout: float, since: float) -> list[dict]:
        """What deserves an alert and has none yet (no delivery with dedup_key alert:<cause>:<job id>), each
        a dict with cause ("dead" or "unconfirmed"), id, rule, kind, order_key, instance, last_message, and
        body (its delivery's, redacted):

        - dead: a dead job (not itself an alert) that went dead at or after `since`;
        - unconfirmed (only when confirm_timeout > 0): a livestream.start that Zoom answered with a 2xx,
          done, not confirmed, finished between `since` (at most an hour ago) and now - confirm_timeout;
        - stopped: a live_streaming_stopped delivery (id is the delivery's, kind its event) received between
          `since` (at most an hour ago) and 20 s ago, for a meeting instance in which a start is done, no
          stop was planned and no meeting.ended / webinar.ended has arrived (the meeting still runs)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections held by this process."""
