"""Edge: drain the outbox. Claim a job under a lease, pace, call Zoom, record, reschedule.

Outcomes: 2xx done; 429 retry at Retry-After (30 s without one), not a failure; 5xx, timeouts and
connection errors retry with exponential backoff and jitter (1 s doubling to 60 s) until the job's
deadline, then dead; any other 4xx dead at once with Zoom's code and message. Delays count from the
answer (or the failure), not from the request.
"""
from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import replace

import requests

from .errors import SecretError, StoreError
from .logs import log
from .plan import masked, unseal
from .secrets import resolve_secret, scrub
from .settings import Settings
from .store.contract import Attempt, Job, Store
from .zoom import Answer, TokenError, ZoomClient

LEASE_SECONDS = 60         # longer than pacing wait + connect + read timeouts
REAP_EVERY = 10.0          # look for leases held by dead processes on this host this often
POLL_SECONDS = 0.5         # idle threads look for due retries this often
RATE_LIMIT_DEFAULT = 30.0  # Zoom's advice when a 429 has no Retry-After
BACKOFF_START, BACKOFF_CAP = 1.0, 60.0
PACING_LATE = 0.01         # seconds after its slot a call may still leave (the spacing's margin absorbs it)
PACING_TRIES = 3           # slots taken at most per call, when the machine is too busy to leave on time
PRUNE_EVERY = 3600.0

SCOPE_HINT = ("the app lacks a scope: add meeting:update:livestream_status:admin and "
              "meeting:update:livestream:admin (webinar:update:... for webinars), or meeting:write:admin")


def backoff(failures: int, rng=random.random) -> float:
    """Delay before retry number `failures` (1-based): ~1 s doubling to ~60 s, with +-20% jitter."""
    base = min(BACKOFF_CAP, BACKOFF_START * 2 ** max(0, failures - 1))
    return base * (0.8 + 0.4 * rng())


class Dispatcher:
    def __init__(self, store: Store, client: ZoomClient | None, settings: Settings, threads: int | None = None,
                 clock=time.time, sleep=time.sleep):
        self.store, self.client, self.settings = store, client, settings
        self.threads = threads or settings.dispatch_threads
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.clock, self.sleep = clock, sleep
        self._cond = threading.Condition()
        self._generation = 0
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._pruned_at = 0.0
        self._reaped_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> "Dispatcher":
        client = None if settings.dry_run else ZoomClient(
            settings.api_url, settings.oauth_url, settings.account_id, settings.client_id, settings.client_secret)
        return cls(store, client, settings)

    # -- lifecycle
    def start(self) -> None:
        """Start the threads (in the process that will run them: after fork)."""
        for n in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"reactor-dispatch-{n}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Let in-flight calls finish for up to `timeout` seconds in all (below a PaaS's kill timeout);
        a call cut short keeps its lease and runs again elsewhere."""
        self._stopping.set()
        self.wake(self.threads)
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wake(self, count: int = 1) -> None:
        """Work was committed: wake idle threads now instead of at their next poll."""
        with self._cond:
            self._generation += 1
            self._cond.notify(count)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                generation = self._generation
            try:
                worked = self.run_once()
            except StoreError as exc:
                log("dispatcher: the store is unavailable; retrying", 30, error=str(exc))
                worked = False
                self.sleep(1.0)
            except Exception as exc:  # a dispatcher thread must never die
                log("dispatcher: unexpected error", 40, error=repr(exc))
                worked = False
                self.sleep(1.0)
            if not worked:
                with self._cond:
                    if self._generation == generation and not self._stopping.is_set():
                        self._cond.wait(POLL_SECONDS)

    def reap(self, now: float) -> None:
        """Release leases of dispatchers on this host whose process is gone (kill -9, OOM), at once;
        leases of other hosts' dispatchers expire after LEASE_SECONDS."""
        host = socket.gethostname()
        for owner in self.store.lease_owners():
            owner_host, _, rest = owner.partition(":")
            pid = rest.split(":", 1)[0]
            if owner_host == host and pid.isdigit() and not _alive(int(pid)):
                released = self.store.release(owner, now)
                log("released the jobs of a dead dispatcher", owner=owner, jobs=released)

    # -- one job
    def run_once(self) -> bool:
        """Claim and run one due job; False when none was due."""
        now = self.clock()
        if now - self._pruned_at > PRUNE_EVERY:
            self._pruned_at = now
            self.store.prune(now - self.settings.history_days * 86400)
        if now - self._reaped_at > REAP_EVERY:
            self._reaped_at = now
            self.reap(now)
        job = self.store.claim(self.owner, now, LEASE_SECONDS)
        if job is None:
            return False
        self.run(job)
        return True

    def run(self, job: Job) -> None:
        action = job.action
        sent = {"method": action.method, "path": action.path, "body": masked(action.body)}
        now = self.clock()
        if now > job.deadline:
            return self._finish(job, Attempt(now, "dead", message=(
                "the event is older than REACTOR_ACTION_DEADLINE; a late event does not start or stop a "
                "stream blindly (python -m reactor retry ID sends it anyway)"), sent=sent), "dead")
        if self.store.superseded(job):
            return self._finish(job, Attempt(now, "skipped", message=(
                "a later event's action on this meeting already ran; this earlier one would undo it"), sent=sent),
                "skipped")
        if self.store.failed_before(job):
            return self._finish(job, Attempt(now, "skipped", message=(
                "an earlier action of this rule for this event failed; this one would act on its failure"),
                sent=sent), "skipped")
        if self.client is None:
            return self._finish(job, Attempt(now, "done", message="dry run: not sent", sent=sent), "done")
        revealed = [self.settings.client_secret]  # values Zoom might echo back in an error message

        def reveal(ref: str) -> str:
            revealed.append(resolve_secret(ref, os.environ, self.settings.secret_key))
            return revealed[-1]

        try:
            body = unseal(action.body, reveal)
        except SecretError as exc:
            return self._finish(job, Attempt(now, "dead", message=f"secret unavailable: {exc}", sent=sent), "dead")

        started = self.clock()
        try:
            self.client.token()  # before the slot: fetched after it, the token would make this call late
            for _ in range(PACING_TRIES):  # a call that would leave late takes a new slot: late, it crowds the next
                slot = self.store.reserve_slot(action.account or "-", self.settings.zoom_rate, self.clock())
                wait = slot - self.clock()
                if wait > 0:
                    self.sleep(wait)
                if self.clock() - slot <= PACING_LATE:
                    break
            started = self.clock()
            answer = self.client.call(action.method, action.path, body)
        except TokenError as exc:
            answer = None
            failure = f"OAuth token: {exc}"
            if not exc.retryable:
                return self._finish(job, Attempt(started, "dead", message=scrub(failure, revealed), sent=sent), "dead")
        except requests.RequestException as exc:
            answer, failure = None, _network_failure(exc)
        took = round((self.clock() - started) * 1000, 1)
        if answer is not None:
            return self._judge(job, replace(answer, message=scrub(answer.message, revealed)), started, took, sent)
        return self._retry(job, started, took, sent, scrub(failure, revealed), None, None)

    def _judge(self, job: Job, answer: Answer, at: float, took: float, sent: dict) -> None:
        if 200 <= answer.status < 300:
            return self._finish(job, Attempt(at, "done", answer.status, message="ok", duration_ms=took, sent=sent),
                                "done")
        if answer.status == 429:
            delay = answer.retry_after if answer.retry_after is not None else RATE_LIMIT_DEFAULT
            due = at + took / 1000 + delay  # Retry-After counts from the answer, not from the request
            message = f"rate limited ({answer.message or 'too many requests'}); retry after {delay:.0f} s"
            if due > job.deadline:
                return self._finish(job, Attempt(at, "dead", 429, answer.code, message + ", past the deadline",
                                                 duration_ms=took, sent=sent), "dead")
            return self._finish(job, Attempt(at, "rate_limited", 429, answer.code, message, due, took, sent),
                                "pending", due, failure=False)
        if answer.status >= 500:
            return self._retry(job, at, took, sent, f"Zoom answered {answer.status}: {answer.message}",
                               answer.status, answer.code)
        message = f"Zoom answered {answer.status}"
        if answer.code is not None:
            message += f" code {answer.code}"
        message += f": {answer.message}" if answer.message else ""
        if answer.code == 4700:
            message += f" ({SCOPE_HINT})"
        return self._finish(job, Attempt(at, "dead", answer.status, answer.code, message, duration_ms=took,
                                         sent=sent), "dead")

    def _retry(self, job: Job, at: float, took: float, sent: dict, message: str, status, code) -> None:
        due = at + took / 1000 + backoff(job.failures + 1)  # counted from the failure, as Retry-After is
        if due > job.deadline:
            return self._finish(job, Attempt(at, "dead", status, code, f"{message}; gave up at the deadline",
                                             duration_ms=took, sent=sent), "dead")
        return self._finish(job, Attempt(at, "retry", status, code, message, due, took, sent), "pending", due)

    def _finish(self, job: Job, attempt: Attempt, status: str, due_at: float | None = None,
                failure: bool | None = None) -> None:
        counts_as_failure = attempt.outcome == "retry" if failure is None else failure
        held = self.store.finish(job, self.owner, attempt, status, due_at, failure=counts_as_failure)
        log("attempt", job=job.id, delivery=job.delivery_id, rule=job.action.rule, action=job.action.kind,
            path=job.action.path, outcome=attempt.outcome, http_status=attempt.http_status,
            zoom_code=attempt.zoom_code, message=attempt.message, next_at=attempt.next_at,
            ms=attempt.duration_ms, lease_lost=not held or None)


def _alive(pid: int) -> bool:
    """True while `pid` runs. A zombie (killed, not yet reaped by its parent or by init, which in a
    container may take long or never happen) is dead: its leases are released."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc (not Linux): running as far as we can tell
        return True


def _network_failure(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer from Zoom within the timeout ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError):
        return f"cannot reach Zoom ({type(exc).__name__})"
    return f"the call to Zoom failed ({type(exc).__name__})"
