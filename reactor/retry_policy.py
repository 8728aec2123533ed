"""Pure: the retry policy. Zoom's answer (or the failure), the job and the clock in; what to record,
the job's new status and when to try next out. The dispatcher does what this decides.

2xx done; 429 retry at Retry-After (30 s without one; 0 or past: the backoff), not counted as a failure; 5xx, timeouts and
connection errors retry with exponential backoff and jitter (1 s doubling to 60 s) until the job's
deadline, then dead; 401 (after the client's one retry with a fresh token) and any other 4xx dead at
once with Zoom's code and message. Delays count from the answer (or the failure), not the request.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable

from .delivery import Attempt, Job
from .errors import TokenError, ZoomError

RATE_LIMIT_DEFAULT = 30.0  # Zoom's advice when a 429 has no Retry-After
RATE_LIMIT_FLOOR = 1.0     # a 429's Retry-After below this (0, or a time already past: clocks apart) gives the backoff
BACKOFF_START, BACKOFF_CAP = 1.0, 60.0
SCOPE_HINT = ("the app lacks a scope: add meeting:update:livestream_status:admin and "
              "meeting:update:livestream:admin (webinar:update:... for webinars), or meeting:write:admin")
SCOPE_CODES = (4700, 4711)  # 4711: "Invalid access token, does not contain scopes:[…]" names the missing scope
# Zoom's codes that say the call cannot work as configured (credentials, scopes, ids, account): never
# "nothing to stop". Any other 400/404 to a stop is read as "no stream is running" (Zoom documents no
# code for it; see the README's decisions).
CONFIG_CODES = frozenset({124, 300, 1001, 1010, 3000, *SCOPE_CODES})
LATE = ("the event is older than REACTOR_ACTION_DEADLINE; a late event does not start or stop a stream "
        "blindly (python -m reactor retry ACTION --force sends it anyway)")
RAN_OUT = ("an earlier attempt did not succeed and the next came due after REACTOR_ACTION_DEADLINE; gave up at "
           "the deadline (python -m reactor retry ACTION --force sends it anyway)")
SUPERSEDED = "a later event's action on this meeting already ran; this earlier one would undo it"
AFTER_FAILURE = "an earlier action of this rule for this event failed; this one would act on its failure"


@dataclass(frozen=True)
class Answer:
    """What Zoom said to one call."""

    status: int
    code: int | None = None           # Zoom's error code, when the body has one
    message: str = ""
    retry_after: float | None = None  # seconds from the answer, from Retry-After
    tracking_id: str = ""             # x-zm-trackingid


@dataclass(frozen=True)
class Decision:
    """What to record for one job: the attempt, the job's new status, and when it is due again."""

    attempt: Attempt
    status: str                  # done | pending | dead | skipped
    due_at: float | None = None  # for pending: when to try again
    failure: bool = False        # counts toward the backoff exponent


def backoff(failures: int, rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number `failures` (1-based): ~1 s doubling to ~60 s, with +-20% jitter."""
    base = min(BACKOFF_CAP, BACKOFF_START * 2 ** max(0, failures - 1))
    return base * (0.8 + 0.4 * rng())


def before_call(job: Job, now: float, sent: dict, *, superseded: bool, failed_before: bool,
                dry_run: bool) -> Decision | None:
    """A decision that makes the call unnecessary (too late, superseded, after a failure, dry run), or None."""
    if now > job.deadline:  # a late event, or a retry due just before the deadline and reached just after it
        return Decision(Attempt(now, "dead", message=LATE if job.attempts <= 1 else RAN_OUT, sent=sent), "dead")
    if superseded:
        return Decision(Attempt(now, "skipped", message=SUPERSEDED, sent=sent), "skipped")
    if failed_before:
        return Decision(Attempt(now, "skipped", message=AFTER_FAILURE, sent=sent), "skipped")
    if dry_run:
        return Decision(Attempt(now, "done", message="dry run: not sent", sent=sent), "done")
    return None


def after_call(job: Job, result: Answer | ZoomError, started: float, took_ms: float, sent: dict,
               rng: Callable[[], float] = random.random) -> Decision:
    """What Zoom's answer (or the failure to get one) to the call made at `started` means for `job`."""
    answered_at = started + took_ms / 1000
    if isinstance(result, ZoomError):
        message = f"OAuth token: {result}" if isinstance(result, TokenError) else str(result)
        if not result.retryable:
            return Decision(Attempt(started, "dead", message=message, sent=sent), "dead")
        return _retry(job, started, took_ms, answered_at, sent, message, None, None, rng)
    decision = _judge(job, result, started, took_ms, answered_at, sent, rng)
    if result.tracking_id:
        decision = replace(decision, attempt=replace(decision.attempt, tracking_id=result.tracking_id))
    return decision


def _judge(job: Job, answer: Answer, started: float, took_ms: float, answered_at: float, sent: dict,
           rng) -> Decision:
    if 200 <= answer.status < 300:
        return Decision(Attempt(started, "done", answer.status, message="ok", duration_ms=took_ms, sent=sent), "done")
    if answer.status == 429:
        delay = answer.retry_after if answer.retry_after is not None else RATE_LIMIT_DEFAULT
        if delay < RATE_LIMIT_FLOOR:  # never again at once: each try would be one more 429 on the account's limit
            delay = max(RATE_LIMIT_FLOOR, backoff(job.attempts, rng))
        due = answered_at + delay
        message = f"rate limited ({answer.message or 'too many requests'}); retry after {delay:.0f} s"
        if due > job.deadline:
            return Decision(Attempt(started, "dead", 429, answer.code, message + ", past the deadline",
                                    duration_ms=took_ms, sent=sent), "dead")
        return Decision(Attempt(started, "rate_limited", 429, answer.code, message, due, took_ms, sent), "pending", due)
    if answer.status >= 500:
        return _retry(job, started, took_ms, answered_at, sent, f"Zoom answered {answer.status}: {answer.message}",
                      answer.status, answer.code, rng)
    message = f"Zoom answered {answer.status}"
    if answer.code is not None:
        message += f" code {answer.code}"
    message += f": {answer.message}" if answer.message else ""
    if answer.code in SCOPE_CODES:
        missing = _named_scopes(answer.message)
        message += (f" (add the scope{'s' if len(missing) > 1 else ''} {', '.join(missing)} to the app on Zoom's "
                    f"App Marketplace, then retry)" if missing else f" ({SCOPE_HINT})")
    if job.action.kind == "livestream.stop" and answer.status in (400, 404) and answer.code not in CONFIG_CODES:
        return Decision(Attempt(started, "done", answer.status, answer.code, f"nothing to stop: {message}",
                                duration_ms=took_ms, sent=sent), "done")
    return Decision(Attempt(started, "dead", answer.status, answer.code, message, duration_ms=took_ms, sent=sent),
                    "dead")


def _named_scopes(message: str) -> list[str]:
    """The scopes a 4711 message names: "Invalid access token, does not contain scopes:[a, b]"."""
    inside = message.partition("scopes:")[2].partition("[")[2].partition("]")[0]
    return [scope.strip() for scope in inside.split(",") if scope.strip()]


def _retry(job: Job, started: float, took_ms: float, answered_at: float, sent: dict, message: str,
           status: int | None, code: int | None, rng) -> Decision:
    due = answered_at + backoff(job.failures + 1, rng)  # counted from the failure, as Retry-After is
    if due > job.deadline:
        return Decision(Attempt(started, "dead", status, code, f"{message}; gave up at the deadline",
                                duration_ms=took_ms, sent=sent), "dead")
    return Decision(Attempt(started, "retry", status, code, message, due, took_ms, sent), "pending", due, failure=True)


def operator_retry_refusal(instance_ended: bool, deadline: float, now: float) -> str | None:
    """Why an operator's retry of a dead action could act on the wrong meeting (then it needs --force),
    or None. A meeting id outlives its instances: a recurring meeting or a personal meeting ID runs again
    under the same id, so an old start would start whatever instance is live now."""
    if instance_ended:
        return ("its meeting instance has ended (Zoom sent meeting.ended): a retry would act on whatever "
                "instance of this meeting id is live now")
    if now > deadline:
        return (f"it is {_age(now - deadline)} past its deadline (REACTOR_ACTION_DEADLINE after its event): "
                f"the meeting it was for may be over, and a retry would act on whatever instance is live now")
    return None


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
