"""Group commit: concurrent appends to the inbox of one process share one transaction (one fsync).

One append at a time leads, committing every append queued so far, then hands the lead to the
first append that queued meanwhile; the others sleep on their own event until their commit is done
or the lead is theirs. Each append has its own deadline, APPEND_WAIT after it asked: a commit waits
for the database no longer than its leader's (the oldest append it holds), so no webhook waits for two
commits' worth of waiting. A backend supplies `group_transaction(deadline)` (by default its
`transaction`) and `append_all`.
"""
from __future__ import annotations

import threading
import time

from ..errors import StoreError
from ..logs import log

APPEND_WAIT = 2.0  # seconds an append may wait for the database before the webhook answers 503 (Zoom's limit: 3)
TAKEN_GRACE = 0.4  # seconds past its deadline an append waits for a commit under way that holds it


class GroupCommit:
    """The append() of the store contract, for a backend that can commit many appends at once."""

    def __init__(self):
        self._queue: list[_Pending] = []       # appends waiting for the next group commit
        self._queue_lock = threading.Lock()    # guards the queue, the lead and each _Pending's flags
        self._leading = False                  # an append is committing (or about to)

    def append(self, body: str, dedup_key: str, account: str, received_at: float, order_key: str | None = None) -> int:
        """Queue this delivery for the next group commit and wait for its inbox seq (see the module)."""
        mine = _Pending((body, dedup_key, account, received_at, order_key))
        with self._queue_lock:
            self._queue.append(mine)
            if not self._leading:
                self._leading = mine.lead = True
        if not mine.lead:
            woken = mine.wake.wait(max(0.0, mine.deadline - time.monotonic()))
            with self._queue_lock:
                if not woken and not mine.taken and not mine.lead:  # certainly not stored
                    self._queue.remove(mine)
                    raise StoreError(f"the database did not take the delivery within {APPEND_WAIT} s")
            # a commit holding it is under way: its outcome is ours (or we lead). The backend bounds the commit;
            # should it not (a disk that hangs), the webhook is answered anyway: a 503, and Zoom's retry of a
            # delivery that did get stored is a duplicate
            if not mine.wake.wait(max(0.0, mine.deadline + TAKEN_GRACE - time.monotonic())):
                raise StoreError(f"the database did not confirm the delivery within {APPEND_WAIT + TAKEN_GRACE} s")
        if not mine.done:
            self._lead(mine.deadline)
        if mine.error is not None:
            raise mine.error
        return mine.result

    def group_transaction(self, deadline: float):
        """The durable transaction one group commit runs in, waiting for the database until `deadline`."""
        return self.transaction(deadline=deadline)

    def _lead(self, deadline: float) -> None:
        """Commit what is queued by `deadline` (the leader's), then pass the lead on (or give it up when
        nothing waits). The leader is the oldest append queued, so its deadline is the earliest."""
        self._commit_queued(deadline)
        with self._queue_lock:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.wake.set()
            else:
                self._leading = False

    def _commit_queued(self, deadline: float) -> None:
        """Commit every queued append in one transaction. The batch is taken once the transaction has
        begun (on SQLite: holds the file lock), so whatever queued meanwhile joins this commit.

        A failed commit is retried one delivery at a time, so one delivery the database refuses fails
        alone; only until `deadline`, so every webhook is still answered within Zoom's 3 s, and a
        database that is down fails them all at once."""
        batch: list[_Pending] = []

        def take() -> list[_Pending]:
            with self._queue_lock:
                taken, self._queue = self._queue, []
                for pending in taken:
                    pending.taken = True
            return taken

        try:
            with self.group_transaction(deadline) as conn:
                batch = take()
                self._store(conn, batch)
        except Exception as exc:  # whatever failed, every delivery of the batch learns it was not stored
            error = _as_store_error(exc)
            began = bool(batch)
            if not began:  # the transaction never began: the database is unavailable, and all fail at once
                batch = take()  # (trying each alone would wait for it again, past Zoom's deadline)
            if began and len(batch) > 1 and time.monotonic() < deadline:
                self._one_by_one(batch, error, deadline)
            else:
                for pending in batch:
                    pending.error = error
        for pending in batch:
            pending.done = True
            pending.wake.set()

    def _store(self, conn, batch: list["_Pending"]) -> None:
        for pending, seq in zip(batch, self.append_all(conn, [p.item for p in batch])):
            pending.result = seq

    def _one_by_one(self, batch: list["_Pending"], error: StoreError, deadline: float) -> None:
        """After a failed group commit: commit each delivery alone, so only one the database refuses
        (a value it cannot bind or index) fails; once `deadline` has passed, the rest fail as the batch did."""
        log("a group commit failed; committing its deliveries one at a time", 30, deliveries=len(batch),
            error=str(error))
        for pending in batch:
            if time.monotonic() >= deadline:
                pending.error = error
                continue
            try:
                with self.group_transaction(deadline) as conn:
                    self._store(conn, [pending])
            except Exception as exc:
                pending.result, pending.error = None, _as_store_error(exc)
                log("the database refused a delivery; the others committed with it are unaffected", 40,
                    error=str(pending.error))


def _as_store_error(exc: Exception) -> StoreError:
    """A StoreError for any failure of a commit; a value the driver could not bind is named by its type only."""
    return exc if isinstance(exc, StoreError) else StoreError(f"storing failed: {type(exc).__name__}")


class _Pending:
    """One append waiting for a group commit."""

    __slots__ = ("item", "deadline", "wake", "lead", "taken", "done", "result", "error")

    def __init__(self, item: tuple):
        self.item = item
        self.deadline = time.monotonic() + APPEND_WAIT  # monotonic: when this append's webhook gets its 503
        self.wake = threading.Event()   # set when its commit is done, or when the lead passes to it
        self.lead = self.taken = self.done = False
        self.result, self.error = None, None
