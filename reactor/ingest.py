"""The ingester: inbox rows -> deliveries, verdicts and jobs, in batches, off the request threads.

The request path only appends each verified, redacted delivery to the inbox (one small durable
commit) and answers. A web process then hands what it appended to its ingester, already parsed; the
ingester decides each (receive.decide: match, plan) and stores a batch in one transaction that also
deletes their inbox rows (store.ingest: each row exactly once, however many ingesters race).
Rows nobody handed on (their process died between its 200 and the ingest, or web processes do not
ingest: REACTOR_INGEST=off) are read back from the inbox by a sweep, once ORPHAN_AFTER old.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from . import metrics
from .delivery import NewDelivery
from .errors import StoreError
from .logs import log
from .receive import REACTOR_NOTE, Admitted, Delivery, decide
from .rules.match import encode_verdict, encode_verdicts

BATCH = 500           # deliveries stored per transaction at most
GATHER = 0.1          # under load, seconds an ingest waits after the previous one, so that one transaction takes
                      # what arrived meanwhile: fewer, longer holds of SQLite's write lock, which the request path's
                      # appends need (measured under wrk: with 0.02 s the acknowledged rate was about a fifth lower).
GATHER_ABOVE = 400    # deliveries a second handed to this process (over RATE_WINDOW): under load means above it.
                      # Below, each delivery is taken at once: at 200/s an ingest that happened to find two waiting
                      # used to switch to gathering for good, and reaction went from 3 to 75 ms.
RATE_WINDOW = 0.5     # seconds over which that rate is counted
ORPHAN_AFTER = 5.0    # seconds an inbox row waits for the process that appended it before any sweep takes it
SWEEP_EVERY = 1.0     # seconds between sweeps of the inbox for such rows
PAUSE_AFTER_ERROR = 1.0


class Ingester:
    """One thread per process. `rules`: the process's ActiveRules (the rules in force at ingest);
    `on_jobs`: called after a batch planned jobs (wakes this process's dispatcher)."""

    def __init__(self, store, rules, settings, on_jobs=lambda: None, orphan_after: float = ORPHAN_AFTER,
                 sweep_every: float = SWEEP_EVERY):
        self.store, self.rules, self.settings, self.on_jobs = store, rules, settings, on_jobs
        self.orphan_after, self.sweep_every = orphan_after, sweep_every
        self._handed: deque = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hand(self, seq: int, received_at: float, admitted: Admitted) -> None:
        """A delivery this process appended: ingest it at once (no reading back)."""
        self._handed.append((seq, received_at, admitted))
        if not self._wake.is_set():  # the thread clears it before it takes what was handed: none is missed
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reactor-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop, after ingesting what was handed (within `timeout`; what is left waits for a sweep)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        swept = last = float("-inf")
        busy = False
        window, handed, rate = time.monotonic(), 0, 0.0  # the rate of deliveries handed, counted over RATE_WINDOW
        while not self._stop.is_set():
            self._wake.wait(self.sweep_every)
            if busy:
                self._stop.wait(max(0.0, last + GATHER - time.monotonic()))
            self._wake.clear()
            last = time.monotonic()
            try:
                waiting = len(self._handed)
                handed += waiting
                if last - window >= RATE_WINDOW:
                    window, handed, rate = last, 0, handed / (last - window)
                busy = waiting > 1 and rate > GATHER_ABOVE
                self._ingest_handed()
                if time.monotonic() - swept >= self.sweep_every:
                    swept = time.monotonic()
                    self.sweep()
            except StoreError as exc:  # what was handed stays in the inbox: a sweep takes it later
                self._handed.clear()
                log("ingest failed; the deliveries stay in the inbox and are taken again", 40, error=str(exc))
                self._stop.wait(PAUSE_AFTER_ERROR)
            except Exception as exc:  # a bug must not end the thread: the inbox keeps the deliveries
                self._handed.clear()
                log("ingest failed", 50, error=f"{type(exc).__name__}: {exc}"[:300])
                self._stop.wait(PAUSE_AFTER_ERROR)
        self._drain()

    def _ingest_handed(self) -> None:
        while self._handed:
            self.ingest([self._handed.popleft() for _ in range(min(BATCH, len(self._handed)))])

    def _drain(self) -> None:
        """At stop: ingest what was handed and not yet taken."""
        try:
            self._ingest_handed()
        except Exception as exc:  # the inbox keeps them for the next process's sweep
            log("ingest at stop failed; the deliveries stay in the inbox for another process", 40,
                error=f"{type(exc).__name__}: {exc}"[:300])

    def sweep(self) -> int:
        """Ingest inbox rows older than orphan_after, oldest first; how many were stored."""
        stored = 0
        while not self._stop.is_set():
            made: list = []

            def decide(rows):
                made[:] = self._decide([(seq, at, (body, key, account)) for seq, at, body, key, account in rows])
                return _to_store(made)

            stored += self._record(made, self.store.sweep(time.time() - self.orphan_after, BATCH, decide))
            if len(made) < BATCH:
                return stored
        return stored

    def ingest(self, items: list[tuple]) -> int:
        """Decide and store (seq, received_at, Admitted or (body text, dedup key, account)) items; how many
        this call stored."""
        if not items:
            return 0
        decided = self._decide(items)
        return self._record(decided, self.store.ingest(_to_store(decided)))

    def _decide(self, items: list[tuple]) -> list[tuple[int, Delivery]]:
        rules, accounts, deadline = self.rules.current, self.rules.accounts, self.settings.action_deadline
        return [(seq, _decide_or_note(source, received_at, rules, accounts, deadline))
                for seq, received_at, source in items]

    def _record(self, decided: list[tuple[int, Delivery]], results: list) -> int:
        """Log and count what the store took; wake the dispatcher when jobs were planned; how many were stored."""
        now, stored, jobs = time.time(), 0, False
        for (seq, d), result in zip(decided, results):
            if result is None:  # another ingester stored it
                continue
            stored += 1
            jobs = jobs or bool(result.job_ids)
            record = d.record
            for warning in d.warnings:  # also a "(reactor)" note in the delivery's verdicts, for `history`
                log(warning, 30, event=record.event, delivery=seq)
            log("duplicate" if result.duplicate else "accepted", event=record.event, account=record.account, delivery=seq,
                first=result.delivery_id if result.duplicate else None, target=record.order_key,
                matched=list(d.matched), actions=len(result.job_ids),
                stored_ms=round((now - record.received_at) * 1000, 1))
            metrics.ingested(record.event, "duplicate" if result.duplicate else "stored", now - record.received_at)
        if jobs:
            self.on_jobs()
        return stored


def _to_store(decided: list[tuple[int, Delivery]]) -> list[tuple]:
    """What store.ingest takes for decided deliveries: (seq, record, actions, deadline)."""
    return [(seq, d.record, d.actions, d.deadline) for seq, d in decided]


def _decide_or_note(source, received_at: float, rules, accounts, action_deadline: int) -> Delivery:
    """decide(), or, if deciding fails (a bug: admit checked the body), the delivery recorded with the
    reason and no action, so that it is neither lost nor taken again and again."""
    try:
        return decide(source, received_at, rules=rules, accounts=accounts, action_deadline=action_deadline)
    except Exception as exc:
        why = f"reactor could not process this delivery ({type(exc).__name__}); no action was planned"
        log("ingest could not decide a delivery", 50, error=f"{type(exc).__name__}: {exc}"[:300])
        key, account = (source.event.dedup_key, source.account) if isinstance(source, Admitted) else source[1:]
        record = NewDelivery(dedup_key=f"unprocessed:{key}", event="(unprocessed)", account=account,
                             event_ts_ms=int(received_at * 1000), received_at=received_at, body={},
                             verdicts=encode_verdicts([encode_verdict(REACTOR_NOTE, False, why)]))
        return Delivery(record, [], deadline=received_at)
