"""Pure: what reactor remembers, as values. The store keeps them; the core makes and reads them.

Vocabulary:
- a *delivery* is one accepted webhook (its redacted body and the rule verdicts);
- a *job* is one planned Zoom call from the outbox, with a status:
  pending -> running (leased to one dispatcher) -> done | dead | skipped, or back to pending (retry);
- an *attempt* is one try of a job: what Zoom answered and what happens next.

All times are Unix seconds (float) passed in by the caller, so tests control the clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .plan import PlannedAction

STATUSES = ("pending", "running", "done", "dead", "skipped")


@dataclass(frozen=True)
class NewDelivery:
    dedup_key: str
    event: str
    event_ts_ms: int            # the event's time (event_ts, else the receipt time)
    received_at: float
    body: dict                  # already redacted
    verdicts: str               # JSON: [{"rule": name, "matched": bool, "why": str}] (rules.match.encode_verdicts)
    order_key: str = ""        # Target.key of the event's meeting or webinar, "" when none
    confirms: str = ""         # for live_streaming_started/stopped: "livestream.start" / "livestream.stop"
    instance: str = ""         # the meeting or webinar instance (payload.object.uuid), "" when none
    topic: str = ""            # payload.object.topic when it is text, for the console's search
    account: str = ""          # the name of the account whose Secret Token verified it
    body_text: str = ""        # the body as JSON text when already made (the inbox's), else made from body


@dataclass(frozen=True)
class Accepted:
    delivery_id: int
    duplicate: bool
    job_ids: tuple = ()


@dataclass(frozen=True)
class Job:
    id: int
    delivery_id: int
    action: PlannedAction
    event_ts_ms: int
    deadline: float
    attempts: int
    status: str
    lease_owner: str = ""
    failures: int = 0           # attempts that failed (5xx, network): the backoff exponent
    seq: int = 0                # position among its delivery's jobs


@dataclass(frozen=True)
class Attempt:
    at: float
    outcome: str                # done | retry | rate_limited | dead | skipped
    http_status: int | None = None
    zoom_code: int | None = None
    message: str = ""
    next_at: float | None = None
    duration_ms: float | None = None
    sent: dict = field(default_factory=dict)   # the masked request, for the history
    tracking_id: str = ""       # Zoom's x-zm-trackingid of the answer (Zoom support asks for it)
