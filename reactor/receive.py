"""Pure: a webhook's two steps.

admit (on the request path: verify, parse, check, redact) -> the inbox, then the 200;
decide (in the ingester, a moment later: match, plan) -> the delivery and its jobs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from .accounts import Account, AccountSet, foreign_note, verifying_account
from .delivery import NewDelivery
from .errors import PayloadError
from .events import Event, check_text, event_from_body, parse_body
from .plan import PlannedAction, plan
from .redact import redact
from .rules.match import RuleSet, encode_verdict, encode_verdicts
from .signature import url_validation_answer


@dataclass(frozen=True)
class Reply:
    """Answer at once, store nothing (URL validation)."""

    body: dict


@dataclass(frozen=True)
class Admitted:
    """Verified and checked: append `text` (the redacted body) and the dedup key to the inbox, then
    acknowledge. `event` is the event as the ingester sees it: its body redacted, its key the original's."""

    event: Event
    text: str
    account: str  # the name of the account whose Secret Token verified it


@dataclass(frozen=True)
class Delivery:
    """Store this, then acknowledge."""

    record: NewDelivery
    actions: list[PlannedAction]
    deadline: float
    warnings: tuple[str, ...] = field(default=())  # for the log; each is also a note in record.verdicts
    matched: tuple[str, ...] = field(default=())   # the names of the rules that matched, for the log


REACTOR_NOTE = "(reactor)"  # the `rule` of a verdict that is reactor's note on the delivery, not a rule's


def admit(raw: bytes, timestamp: str | None, signature: str | None, *, accounts: AccountSet, tolerance: int,
          now: float, name: str | None = None) -> Reply | Admitted:
    """What the request path does before the 200: verify, parse, check the fields reactor will key on.
    Raises SignatureError (401) or PayloadError (4xx); a delivery that passes is appended to the inbox.

    The delivery is the account's whose Secret Token verifies it (any of its tokens while one is rotated;
    URL validation is answered with the one that verified); `name` (/webhooks/zoom/<name>): only that
    account's."""
    account, secret = verifying_account(accounts, timestamp, signature, raw, now, tolerance, name)
    body = parse_body(raw)
    if body.get("event") == "endpoint.url_validation":
        payload = body.get("payload")
        token = payload.get("plainToken") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise PayloadError("endpoint.url_validation needs payload.plainToken (a non-empty string)")
        check_text("payload.plainToken", token, 512)  # a lone surrogate cannot be hashed: it was a 500
        return Reply(url_validation_answer(secret, token))
    event = event_from_body(body, raw)
    redacted = redact(body)  # secrets are never stored, not even in the inbox, and no rule sees them
    # ASCII, so any database takes it: the body as sent when it is ASCII and held nothing to redact (most do;
    # serialising it again cost as much as parsing it), else the redacted copy serialised
    text = raw.decode("ascii") if redacted == body and raw.isascii() else json.dumps(redacted)
    return Admitted(replace(event, body=redacted), text, account.name)


def decide(admitted: Admitted | tuple[str, str, str], received_at: float, *, rules: RuleSet, accounts: AccountSet,
           action_deadline: int) -> Delivery:
    """What the ingester makes of an admitted delivery: match and plan. `admitted`: the request path's
    Admitted, or an inbox row's (redacted body text, dedup key, account name), parsed again (it passed
    `admit` then). An event naming another Zoom account than the one whose token verified it is recorded
    with its verdicts but plans no call, as this account's credentials cannot act on it."""
    if isinstance(admitted, Admitted):
        event, name, text = admitted.event, admitted.account, admitted.text
    else:
        event, name, text = _event(*admitted[:2]), admitted[2], admitted[0]
    account = accounts.by_name.get(name) or Account(name, "")  # removed since: its jobs say so when they run
    notes = []
    if event.ts_note:  # rules (`during`) and the deadline see the receipt time; the body keeps what was sent
        event = replace(event, ts_ms=int(received_at * 1000))
        notes.append(event.ts_note)
    foreign = foreign_note(account, event)  # a note (and a warning) too: the rules need not have matched
    matched, shown = rules.encoded(event, account.name, matched_why=foreign)
    if foreign:
        notes.append(foreign)
    actions, skipped = ([], []) if foreign else plan(event, matched, account.name)
    shown += [encode_verdict(s.rule, True, f"{s.kind} skipped: {s.reason}") for s in skipped]
    shown += [encode_verdict(REACTOR_NOTE, False, note) for note in notes]
    event_ms = event.ts_ms if event.ts_ms is not None else int(received_at * 1000)
    record = NewDelivery(
        dedup_key=event.dedup_key, event=event.name, event_ts_ms=event_ms, received_at=received_at,
        body=event.body, body_text=text, verdicts=encode_verdicts(shown),
        order_key=event.order_key, confirms=event.confirms, instance=event.instance,
        topic=_topic(event.field("topic")), account=account.name)
    return Delivery(record, actions, deadline=event_ms / 1000 + action_deadline, warnings=tuple(notes),
                    matched=tuple(r.name for r in matched))


def _event(text: str, dedup_key: str) -> Event:
    raw = text.encode("utf-8")
    return replace(event_from_body(parse_body(raw), raw), dedup_key=dedup_key)


def _topic(value) -> str:
    """The topic as the console searches it: text only, without NUL (PostgreSQL's text cannot hold it) and
    with a lone surrogate (a topic cut mid-emoji, which no database can store) as "?"."""
    if not isinstance(value, str):
        return ""
    return value.replace("\x00", "")[:300].encode("utf-8", "replace").decode("utf-8")
