"""What the console's query strings mean and what its pages compute, checked without Flask.

Every parse raises BadInput with a message that says what was wrong and what to write instead.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ..accounts import NAME as ACCOUNT_NAME

MAX_ID = 2 ** 63 - 1
MAX_Q = 200
PAGE = 50
_EVENT = re.compile(r"^[a-z][a-z0-9_.]{0,99}$")
_MEETING = re.compile(r"^[0-9]{1,20}$")
_RELATIVE = re.compile(r"^([0-9]{1,6})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FIGURES_SECONDS = 2.0  # the overview's figures are shared by every viewer of a process for this long


class BadInput(ValueError):
    """A query string, form field or path the console cannot use; the message says why (shown, escaped)."""


@dataclass(frozen=True)
class Filter:
    """The deliveries list's filter, as the query string gave it (text kept to refill the form)."""

    event: str | None = None
    since: float | None = None
    until: float | None = None
    q: str | None = None
    texts: tuple = ()  # (name, text) pairs to put back in links and forms
    account: str | None = None

    def store_args(self) -> dict:
        return {"event": self.event, "since": self.since, "until": self.until, "q": self.q, "account": self.account}

    @property
    def empty(self) -> bool:
        return not self.texts


class Shared:
    """One value computed at most once per `seconds` per process, shared by every thread that asks: however
    many operators refresh, the overview's counts run at most once per `seconds` (the page says as of when).
    The lock is held while computing, so viewers arriving meanwhile wait for that result, not a second one."""

    def __init__(self, seconds: float = FIGURES_SECONDS):
        self.seconds = seconds
        self._lock = threading.Lock()
        self._value, self._at = None, None

    def get(self, now: float, compute) -> tuple:
        """(compute(now), now), or the value computed at `at` when now is within `seconds` after it."""
        with self._lock:
            if self._at is None or not self._at <= now < self._at + self.seconds:
                self._value, self._at = compute(now), now
            return self._value, self._at


def read_filter(args, now: float | None = None) -> Filter:
    """A Filter from query-string (or form) fields event, since, until, q, account."""
    now = time.time() if now is None else now
    texts = []
    event = _text(args, "event", 100)
    if event:
        if not _EVENT.match(event):
            raise BadInput("event: use an event name such as meeting.started (lower-case letters, digits, _ and .)")
        texts.append(("event", event))
    since, until = (_time(args, name, now) for name in ("since", "until"))
    for name in ("since", "until"):
        if args.get(name):
            texts.append((name, args.get(name).strip()))
    if since is not None and until is not None and since > until:
        raise BadInput("since is after until: nothing can be in that window")
    q = _text(args, "q", MAX_Q)
    if q:
        texts.append(("q", q))
    account = _text(args, "account", 40)
    if account:
        if not ACCOUNT_NAME.match(account):
            raise BadInput("account: use an account name (lower-case letters, digits, - and _)")
        texts.append(("account", account))
    return Filter(event or None, since, until, q or None, tuple(texts), account or None)


def read_id(text, what: str = "before") -> int | None:
    if text in (None, ""):
        return None
    text = str(text).strip()
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise BadInput(f"{what}: use a delivery number (a whole number from the list)")
    return int(text)


def check_id(value: int, what: str) -> int:
    if not 0 < value <= MAX_ID:
        raise BadInput(f"no {what} has the number {value}")
    return value


def check_meeting(text: str) -> str:
    if not _MEETING.match(text):
        raise BadInput("a meeting's timeline is at /console/meetings/ID, ID being the meeting or webinar id "
                       "(digits only, as in Zoom's URL)")
    return text


def _text(args, name: str, limit: int) -> str:
    value = args.get(name, "")
    if not isinstance(value, str):
        raise BadInput(f"{name}: give it once, as text")
    value = value.strip()
    if len(value) > limit:
        raise BadInput(f"{name} is {len(value)} characters long: use at most {limit}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadInput(f"{name} holds control characters: type plain text")
    return value


def _time(args, name: str, now: float) -> float | None:
    """'30m', '2h', '7d' (ago), a Unix time, or an ISO date and time in UTC (2026-11-26T17:00)."""
    text = _text(args, name, 40)
    if not text:
        return None
    if m := _RELATIVE.match(text):
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    if re.fullmatch(r"[0-9]{9,11}(\.[0-9]+)?", text):
        return float(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{name}: use an age such as 30m, 2h or 7d, or a UTC time such as 2026-11-26T17:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def pending(deliveries: list[dict]) -> bool:
    """True while any action on the page may still change (the page then refreshes itself)."""
    return any(j["status"] in ("pending", "running") for d in deliveries for j in d.get("jobs", ()))


def stream_state(timeline: list[dict]) -> tuple[str, float | None]:
    """The stream's state as far as reactor knows it, from a meeting's deliveries in event order: what
    reactor did (its start and stop actions that were done) and what Zoom said (live_streaming_started
    and _stopped events, and confirmations). Returns (state, since when)."""
    state, since = "no stream started by reactor or reported by Zoom", None
    happenings = []
    for d in timeline:
        if d["event"].endswith(".live_streaming_started"):
            happenings.append((d["received_at"], "live: Zoom reported the stream started"))
        elif d["event"].endswith(".live_streaming_stopped"):
            happenings.append((d["received_at"], "stopped: Zoom reported the stream stopped"))
        for job in d.get("jobs", ()):
            kind, done = job["action"].get("kind"), job["status"] == "done"
            finished = max((a["at"] for a in job.get("attempt_log", ())), default=d["received_at"])
            if kind == "livestream.start" and done:
                happenings.append((finished, "live: confirmed by Zoom" if job.get("confirmed_at")
                                   else "started by reactor (not yet confirmed by Zoom)"))
            elif kind == "livestream.stop" and done:
                happenings.append((finished, "stopped by reactor"))
            elif kind == "livestream.start" and job["status"] in ("pending", "running"):
                happenings.append((d["received_at"], "starting: reactor's start is " + job["status"]))
            elif kind == "livestream.start" and job["status"] == "dead":
                happenings.append((finished, "not started: reactor's start is dead (see its Zoom error)"))
    for at, what in sorted(happenings, key=lambda h: h[0]):
        state, since = what, at
    return state, since


def counted(n: int, cap: int) -> str:
    """A count read up to `cap`: "1,234", or "100,000+" when there were more."""
    return f"{cap:,}+" if n > cap else f"{n:,}"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
