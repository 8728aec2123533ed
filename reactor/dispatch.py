"""Edge: drain the outbox. Claim a job under a lease, pace, call Zoom, record what the retry
policy (reactor.retry_policy, pure) decides. This room holds the threads, the lease upkeep, the
unsealing of secrets for the call, and pacing; it knows no HTTP (reactor.zoom does).
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import replace
from typing import Callable

from . import metrics
from .accounts import Account, AccountSet
from .delivery import Job
from .errors import NotSent, SecretError, StoreError, ZoomError
from .logs import log
from .notify import ALERT_URL_SETTING, CHAT_RATE, ChatSender, payload
from .redact import literal_secrets, masked, scrub, unseal
from .retry_policy import Decision, after_call, before_call
from .secrets import resolve_secret
from .settings import Settings
from .store.contract import Attempt, Store
from .zoom import ZoomClient

LEASE_SECONDS = 60         # longer than pacing wait + connect + read timeouts; extended just before each call
SILENT_FOR = 10.0          # a dispatcher whose heartbeat is older than this is dead: its leases are released
BEAT_EVERY = 2.0           # seconds between heartbeats (each also releases the leases of silent dispatchers)
BEAT_GAP = 5.0             # a beat this long after this process's previous one: it was held up too (see upkeep)
POLL_SECONDS = 0.5         # idle threads look for due retries this often
PACING_LATE = 0.01         # seconds after its slot a call may still leave (the spacing's margin absorbs it)
PACING_TRIES = 3           # slots taken at most per call, when the machine is too busy to leave on time
PRUNE_EVERY = 3600.0
RECORD_PATIENCE = LEASE_SECONDS - 15  # seconds after a call a refused record of its outcome is tried again for
RECORD_PAUSE = 0.5
CHAT_KINDS = ("alert", "notify")  # jobs sent to a chat webhook by reactor.notify, not to Zoom


class Dispatcher:
    def __init__(self, store: Store, settings: Settings, accounts: Callable[[], AccountSet], threads: int | None = None,
                 clock=time.time, sleep=time.sleep):
        """`accounts()`: the accounts in force now (they reload); each job's calls use its account's client."""
        self.store, self.settings, self.accounts = store, settings, accounts
        self.threads = threads or settings.dispatch_threads
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"  # unique across containers
        self.clock, self.sleep = clock, sleep
        self._cond = threading.Condition()
        self._generation = 0
        self._stopping = threading.Event()
        self._stopped = threading.Event()  # stop() is done: the heartbeat ends (it beats while calls finish)
        self._workers: list[threading.Thread] = []
        self._pruned_at = 0.0
        self._beaten_at = 0.0      # when its latest heartbeat was recorded (0: none yet)
        self._skew = 0.0           # the database's clock minus this host's (heartbeats are dated by the database's)
        self._judge_from = 0.0     # before this, it releases no other process's leases (see upkeep)
        self.chat = ChatSender()
        self._clients: dict[str, tuple[tuple, ZoomClient]] = {}  # account name -> (its credentials, its client)
        self._clients_lock = threading.Lock()

    def client_for(self, account: Account) -> ZoomClient:
        """The account's Zoom client: its own token cache, made anew when its credentials change."""
        key = (account.account_id, account.client_id, account.client_secret)
        with self._clients_lock:
            held = self._clients.get(account.name)
            if held is None or held[0] != key:
                hint = (f"check account {account.name!r}'s account_id, client_id and client_secret in "
                        f"{self.accounts().path}" if account.source else None)
                held = (key, ZoomClient(self.settings.api_url, self.settings.oauth_url, account.account_id,
                                        account.client_id, account.client_secret, credentials_hint=hint))
                self._clients[account.name] = held
            return held[1]

    # -- lifecycle
    def start(self) -> None:
        """Start the threads (in the process that will run them: after fork). They claim nothing until
        this process's heartbeat is recorded (a database that is down at start-up delays that; it
        does not stop the process)."""
        try:
            self.upkeep()
        except StoreError as exc:
            log("dispatcher: no heartbeat yet, the store is unavailable; claiming nothing until it is back", 30,
                error=str(exc))
        for n in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"reactor-dispatch-{n}", daemon=True)
            thread.start()
            self._workers.append(thread)
        threading.Thread(target=self._heartbeat, name="reactor-heartbeat", daemon=True).start()

    def _heartbeat(self) -> None:
        """upkeep() every BEAT_EVERY seconds, in a thread of its own: a process whose housekeeping is held up
        (a rules reload of a large tree, a long checkpoint, an alert sweep waiting for a lock that a migration
        holds) must not fall silent while its calls are in flight, or another process would send them again."""
        while not self._stopped.wait(BEAT_EVERY):
            try:
                self.upkeep()
            except StoreError as exc:
                log("dispatcher: heartbeat not recorded, the store is unavailable; trying again", 30, error=str(exc))
            except Exception as exc:  # the heartbeat must never die
                log("dispatcher: heartbeat failed", 40, error=repr(exc))

    def stop(self, timeout: float = 10.0) -> None:
        """Let in-flight calls finish for up to `timeout` seconds in all (below a PaaS's kill timeout);
        a call cut short keeps its lease and runs again elsewhere."""
        self._stopping.set()
        self.wake(self.threads)
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stopped.set()
        if not any(thread.is_alive() for thread in self._workers):
            try:
                self.store.forget(self.owner)
            except StoreError:
                pass  # its heartbeat goes silent instead

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

    def upkeep(self) -> None:
        """Every BEAT_EVERY seconds (the heartbeat thread, never busy with a call or housekeeping): say this
        process is alive, and release the leases of dispatchers on any host whose heartbeat went silent."""
        before = self.clock()
        database = self.store.clock()
        self._skew = database - (before + self.clock()) / 2
        now = self._shared_now()
        self._beat(now)
        if now < self._judge_from:
            return
        for owner, jobs in self.store.release_dead(now, SILENT_FOR).items():
            log("released the jobs of a silent dispatcher", owner=owner, jobs=jobs)

    def _shared_now(self) -> float:
        """This host's clock set to the database's (as of the latest heartbeat): what heartbeats are dated and
        judged by, so that hosts whose clocks are seconds apart do not take each other for silent."""
        return self.clock() + self._skew

    # -- one job
    def _beat(self, now: float) -> None:
        """Record this process's heartbeat. One recorded BEAT_GAP or more after the previous (the first, or
        after the database or this process was held up) defers judging others for two beats: when the
        database was held up for everyone (a long transaction on the SQLite file, a lock), every live
        process fell silent with it, and the first to beat again would otherwise release the leases of calls
        the others still have in flight, before they could beat."""
        self.store.heartbeat(self.owner, now)
        if now - self._beaten_at >= BEAT_GAP:
            self._judge_from = now + 2 * BEAT_EVERY
        self._beaten_at = now

    def run_once(self) -> bool:
        """Claim and run one due job; False when none was due (or this process is not known alive yet)."""
        now = self.clock()
        if not self._beaten_at:  # a lease without a heartbeat would be released as a dead process's
            self.upkeep()  # (dated by the database's clock, read first: start() could not, with the database away)
        if now - self._pruned_at > PRUNE_EVERY:
            self._pruned_at = now
            self.store.prune(now - self.settings.history_days * 86400)
        job = self.store.claim(self.owner, now, LEASE_SECONDS)
        if job is None:
            return False
        self.run(job)
        return True

    def run(self, job: Job) -> None:
        action = job.action
        if action.kind in CHAT_KINDS:
            return self._chat(job)
        sent = {"method": action.method, "path": action.path, "body": masked(action.body)}
        now = self.clock()
        late = now > job.deadline
        superseded = not late and self.store.superseded(job)
        failed_before = not late and not superseded and self.store.failed_before(job)
        early = before_call(job, now, sent, superseded=superseded, failed_before=failed_before,
                            dry_run=self.settings.dry_run)
        if early is not None:
            return self._finish(job, early)
        account = self.accounts().for_job(action.account)
        if account is None:
            return self._finish(job, Decision(Attempt(now, "dead", message=(
                f"the account {action.account!r} of this action is no longer configured (REACTOR_ACCOUNTS): "
                f"add it back, then retry the action"), sent=sent), "dead"))
        client = self.client_for(account)
        # values Zoom might echo back in an error message: the client secret, literal keys, resolved secrets
        revealed = [account.client_secret, *literal_secrets(action.body)]

        def reveal(ref: str) -> str:
            revealed.append(resolve_secret(ref, os.environ, self.settings.secret_key))
            return revealed[-1]

        try:
            body = unseal(action.body, reveal)
        except SecretError as exc:
            return self._finish(job, Decision(Attempt(now, "dead", message=f"secret unavailable: {exc}", sent=sent),
                                              "dead"))
        started = self.clock()
        try:
            client.token()  # before the slot: fetched after it, the token would make this call late
            for _ in range(PACING_TRIES):  # a call that would leave late takes a new slot: late, it crowds the next
                slot = self.store.reserve_slot(account.name, account.rate, self.clock())
                self._wait_for(job, slot)
                if self.clock() - slot <= PACING_LATE:
                    break
            started = self.clock()
            result = client.call(action.method, action.path, body, before_send=lambda: self.store.extend(
                job, self.owner, self.clock(), LEASE_SECONDS))
        except NotSent:
            log("lease lost before the call; not sent (another dispatcher has the job)", job=job.id,
                delivery=job.delivery_id, action=action.kind, path=action.path)
            return
        except ZoomError as exc:
            result = exc
        took = round((self.clock() - started) * 1000, 1)
        metrics.zoom_request(action.path, getattr(result, "status", None), took / 1000)
        decision = after_call(job, result, started, took, sent)
        attempt = decision.attempt
        self._finish(job, replace(decision, attempt=replace(attempt, message=scrub(attempt.message, revealed))),
                     called_at=started)

    def _chat(self, job: Job) -> None:
        """An alert or a rule's notify: one POST to a chat webhook, judged like a Zoom answer. Its path is
        the setting's name (alerts) or the rule's secret reference, resolved only here."""
        action = job.action
        sent = {"method": "POST", "path": action.path, "body": masked(action.body)}  # the path is a reference
        now = self.clock()
        early = before_call(job, now, sent, superseded=False,
                            failed_before=action.kind == "notify" and now <= job.deadline and self.store.failed_before(job),
                            dry_run=self.settings.dry_run)
        if early is not None:
            metrics.alert(action.kind, early.attempt.outcome)
            return self._finish(job, early)
        try:
            if action.path == ALERT_URL_SETTING:
                url = self.settings.alert_url
                if not url:
                    raise SecretError(f"{ALERT_URL_SETTING} is not set where this dispatcher runs")
            else:
                url = resolve_secret(action.path, os.environ, self.settings.secret_key)
        except SecretError as exc:
            metrics.alert(action.kind, "dead")
            return self._finish(job, Decision(Attempt(now, "dead", message=f"secret unavailable: {exc}", sent=sent),
                                              "dead"))
        host = url.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[2]
        self._wait_for(job, self.store.reserve_slot(f"chat:{host}", CHAT_RATE, self.clock()))
        if not self.store.extend(job, self.owner, self.clock(), LEASE_SECONDS):
            log("lease lost before the message; not sent (another dispatcher has the job)", job=job.id)
            return
        started = self.clock()
        try:
            result = self.chat.post(url, payload(action.body.get("format", self.settings.alert_format),
                                                 str(action.body.get("text", ""))))
        except ZoomError as exc:
            result = exc
        took = round((self.clock() - started) * 1000, 1)
        decision = after_call(job, result, started, took, sent)
        message = scrub(decision.attempt.message.replace("Zoom answered", "the chat webhook answered"), [url])
        metrics.alert(action.kind, decision.attempt.outcome)
        self._finish(job, replace(decision, attempt=replace(decision.attempt, message=message)), called_at=started)

    def _wait_for(self, job: Job, slot: float) -> None:
        """Sleep until the pacing slot. A wait of over half the lease (a slow rate, many threads queued on one
        account or chat) first extends the job's lease past the slot: run out mid-wait, it let another thread
        of this process, the same owner, claim the job and send it too. A lease lost meanwhile is not sent
        (the extend before the call says so)."""
        wait = slot - self.clock()
        if wait > LEASE_SECONDS / 2:
            self.store.extend(job, self.owner, self.clock(), wait + LEASE_SECONDS)
        if wait > 0:
            self.sleep(wait)

    def _finish(self, job: Job, decision: Decision, called_at: float | None = None) -> None:
        """Record the decision. After a call (made at `called_at`), a database that refuses the record (a
        write lock held past its 2 s wait) is asked again until shortly before the lease taken for the call
        runs out: unrecorded, the job would be claimed again once its lease expired, and sent twice."""
        attempt = decision.attempt
        refused = False
        while True:
            try:
                held = self.store.finish(job, self.owner, attempt, decision.status, decision.due_at,
                                         failure=decision.failure)
                break
            except StoreError as exc:
                if called_at is None:
                    raise
                if self.clock() + RECORD_PAUSE > called_at + RECORD_PATIENCE:
                    log("the outcome of a call could not be recorded; the call will be made again once its lease "
                        "runs out", 40, job=job.id, outcome=attempt.outcome, error=str(exc))
                    raise
                if not refused:  # once per call, not every RECORD_PAUSE
                    log("the outcome of a call could not be recorded yet; trying again", 30, job=job.id,
                        outcome=attempt.outcome, error=str(exc))
                refused = True
                self.sleep(RECORD_PAUSE)
        metrics.action(job.action.kind, attempt.outcome)
        log("attempt", job=job.id, delivery=job.delivery_id, rule=job.action.rule, action=job.action.kind,
            path=job.action.path, outcome=attempt.outcome, http_status=attempt.http_status,
            zoom_code=attempt.zoom_code, message=attempt.message, next_at=attempt.next_at,
            ms=attempt.duration_ms, lease_lost=not held or None)
