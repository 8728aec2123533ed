"""Pure: turn a verified body into an Event; field paths; the dedup key; the action target; Zoom's event facts."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field as dataclass_field
from typing import Any

from .errors import PayloadError

MISSING = object()
ENVELOPE_FIELDS = ("event", "event_ts", "payload", "download_token")
MAX_DEPTH = 64
# Identifying fields become database keys and columns (dedup key, order key, pacing account): each is
# checked at parse time so one odd delivery is a clear 400, never a failed commit for its whole batch.
MAX_EVENT_NAME = 100      # Zoom's names are ~40 characters (meeting.participant_jbh_waiting_left)
MAX_IDENTIFIER = 200      # uuids (24 characters), account and user ids are far shorter
MAX_ID_DIGITS = 20        # meeting and webinar ids: 9 to 11 digits; 20 is the decimal_id limit
MAX_KEY = 1000            # a dedup key built from these fields
# event_ts is milliseconds since 1970: 10**12 is 2001-09-09, 10**13 is 2286-11-20. A value outside is not
# used (seconds would make every action dead at once and put `during` windows in 1970): see odd_event_ts.
EVENT_TS_MIN, EVENT_TS_MAX = 10**12, 10**13
IDENTIFIERS = ("payload.object.uuid", "payload.account_id", "payload.object.host_id",
               "payload.object.participant.user_id", "payload.object.participant.id",
               "payload.object.participant.participant_uuid")
_CONTROL = frozenset(range(0x20)) | {0x7F}
# Zoom's confirmation events: which action of reactor's each one confirms on its meeting or webinar.
CONFIRMS = {
    "meeting.live_streaming_started": "livestream.start", "meeting.live_streaming_stopped": "livestream.stop",
    "webinar.live_streaming_started": "livestream.start", "webinar.live_streaming_stopped": "livestream.stop",
}


@dataclass(frozen=True)
class Target:
    """What a live-stream action acts on: a meeting or a webinar, by decimal id."""

    kind: str  # "meetings" | "webinars"
    id: str

    @property
    def key(self) -> str:
        """The order key: actions on one target run one at a time, in event order."""
        return f"{self.kind}/{self.id}"


@dataclass(frozen=True)
class Event:
    name: str
    ts_ms: int | None      # event_ts, ms since epoch, when Zoom sent a usable one
    body: dict            # the whole parsed body
    dedup_key: str
    ts_note: str = ""      # why event_ts was not used, when it was sent but is not plausible milliseconds
    # what rules read of this event, by path (and how verdicts show it, and whether it passes each shared
    # matcher): many candidate rules read the same few fields. A new Event (dataclasses.replace) starts
    # empty; the body is never changed once parsed.
    cache: dict = dataclass_field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def object(self) -> dict:
        payload = self.body.get("payload")
        obj = payload.get("object") if isinstance(payload, dict) else None
        return obj if isinstance(obj, dict) else {}

    @property
    def account_id(self) -> str:
        payload = self.body.get("payload")
        value = payload.get("account_id") if isinstance(payload, dict) else None
        return value if isinstance(value, str) else ""

    @property
    def confirms(self) -> str:
        """The action kind this event confirms (a live stream started or stopped), else ""."""
        return CONFIRMS.get(self.name, "")

    @property
    def instance(self) -> str:
        """The meeting or webinar instance (payload.object.uuid), "" when the event names none."""
        uuid = self.object.get("uuid")
        return uuid if isinstance(uuid, str) else ""

    @property
    def target(self) -> Target | None:
        """The meeting or webinar this event is about, or None when the event names none."""
        kind = "webinars" if self.name.startswith("webinar.") else "meetings"
        ident = decimal_id(self.object.get("id"))
        return Target(kind, ident) if ident else None

    @property
    def order_key(self) -> str:
        """Its actions' order key: the meeting or webinar it is about, "" when it names none."""
        target = self.target
        return target.key if target else ""

    def field(self, path: str) -> Any:
        """The value at a dotted field path, or MISSING. See `resolve_path`."""
        try:
            return self.cache[path]
        except KeyError:
            value = self.cache[path] = resolve_path(self.body, path)
            return value


def parse_body(raw: bytes) -> dict:
    """Parse a verified body into a JSON object; raise PayloadError (400) when it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("the body is not UTF-8: Zoom sends JSON in UTF-8") from None
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"the body is not valid JSON ({_short(exc)}): send a JSON object") from None
    if not isinstance(body, dict):
        raise PayloadError(f"the body is JSON {type(body).__name__}, not an object: send a JSON object")
    if _depth(body) > MAX_DEPTH:
        raise PayloadError(f"the body nests deeper than {MAX_DEPTH} levels: Zoom events are shallow")
    return body


def event_from_body(body: dict, raw: bytes) -> Event:
    """An Event from a parsed body; raise PayloadError when `event` is not a non-empty string."""
    name = body.get("event")
    if not isinstance(name, str) or not name.strip():
        raise PayloadError("the body has no 'event' string: this is not a Zoom event notification")
    check_identifiers(name, body)
    ts = body.get("event_ts")
    ts_ms = ts if plausible_ms(ts) else None
    key = dedup_key(name, body, raw)
    check_text("the dedup key built from this body", key, MAX_KEY)
    return Event(name=name, ts_ms=ts_ms, body=body, dedup_key=key, ts_note=odd_event_ts(ts))


def plausible_ms(ts: Any) -> bool:
    """Whether `ts` can be Zoom's event_ts: an integer of milliseconds since 1970, between 2001 and 2286."""
    return isinstance(ts, int) and not isinstance(ts, bool) and EVENT_TS_MIN <= ts < EVENT_TS_MAX


def odd_event_ts(ts: Any) -> str:
    """Why an event_ts that was sent is not used ("" when it is usable, or absent): the receipt time is used."""
    if ts is None or plausible_ms(ts):
        return ""
    shown = json.dumps(ts)[:40] if isinstance(ts, (int, float, str, bool)) else f"(a JSON {type(ts).__name__})"
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and 10**9 <= ts < 10**10:
        hint = " (it looks like seconds)"
    elif isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts >= EVENT_TS_MAX:
        hint = " (it is too large: microseconds?)"
    else:
        hint = ""
    return f"event_ts {shown} is not milliseconds since 1970{hint}; used the receipt time"


def check_identifiers(name: str, body: dict) -> None:
    """Raise PayloadError (400) when an identifying field could not be stored as a key: a lone
    surrogate (invalid UTF-8), a NUL or other control character, or a length no Zoom id has."""
    check_text("'event'", name, MAX_EVENT_NAME)
    for path in IDENTIFIERS:
        value = resolve_path(body, path)
        if isinstance(value, str):
            check_text(path, value, MAX_IDENTIFIER)
    ident = resolve_path(body, "payload.object.id")
    if isinstance(ident, int) and not isinstance(ident, bool) and len(str(abs(ident))) > MAX_ID_DIGITS:
        raise PayloadError(f"payload.object.id has {len(str(abs(ident)))} digits; Zoom's meeting and webinar "
                           f"ids have at most {MAX_ID_DIGITS}: this is not a Zoom event")


def check_text(where: str, value: str, limit: int) -> None:
    """PayloadError unless `value` is at most `limit` characters, with no lone surrogate or control character."""
    if len(value) > limit:
        raise PayloadError(f"{where} is {len(value)} characters; at most {limit} are accepted: Zoom's are far shorter")
    for char in value:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            raise PayloadError(f"{where} holds a lone surrogate (\\u{code:04x}, half of a character), which cannot "
                               f"be stored: send it as valid UTF-8")
        if code in _CONTROL:
            raise PayloadError(f"{where} holds a control character (\\u{code:04x}), which cannot be stored: "
                               f"Zoom's identifiers are printable")


def dedup_key(name: str, body: dict, raw: bytes) -> str:
    """The key under which a redelivery of the same event is recognised: what the event is, not its
    bytes (Zoom has redelivered bodies that differ, e.g. in download tokens). By family:

    - meeting/webinar started and ended, recording.completed: once per meeting instance: name + uuid;
    - participant joined/left (and the like): name + instance + participant + join/leave time;
    - live_streaming_started/stopped: name + instance + live_streaming.date_time (else event_ts);
    - anything else, or any of the above without its identity: the SHA-256 of the raw body.
    """
    obj = _object(body)
    uuid = obj.get("uuid")
    if isinstance(uuid, str) and uuid:
        if name in ONCE_PER_INSTANCE or (name.startswith(("meeting.", "webinar."))
                                         and name.endswith((".started", ".ended"))):
            return f"{name}:{uuid}"
        identity = _participant_identity(obj) if ".participant_" in name else (
            _stream_identity(obj, body) if ".live_streaming_" in name else None)
        if identity:
            return f"{name}:{uuid}:{hashlib.sha256(identity.encode('utf-8', 'replace')).hexdigest()[:32]}"
    return f"{name}:sha256:{hashlib.sha256(raw).hexdigest()}"


ONCE_PER_INSTANCE = frozenset({"recording.completed", "webinar.recording.completed"})


def _object(body: dict) -> dict:
    payload = body.get("payload")
    obj = payload.get("object") if isinstance(payload, dict) else None
    return obj if isinstance(obj, dict) else {}


def _participant_identity(obj: dict) -> str | None:
    """Who joined or left, and when: the same person joining twice is two events."""
    person = obj.get("participant")
    if not isinstance(person, dict):
        return None
    who = next((str(person[k]) for k in ("participant_uuid", "user_id", "id", "email", "user_name")
                if isinstance(person.get(k), (str, int)) and not isinstance(person.get(k), bool) and person.get(k) != ""),
               None)
    when = next((person[k] for k in ("join_time", "leave_time", "date_time") if isinstance(person.get(k), str)
                 and person[k]), None)
    return f"participant:{who}:{when}" if who and when else None


def _stream_identity(obj: dict, body: dict) -> str | None:
    """When the stream started or stopped."""
    stream = obj.get("live_streaming")
    when = stream.get("date_time") if isinstance(stream, dict) else None
    if isinstance(when, str) and when:
        return f"stream:{when}"
    ts = body.get("event_ts")
    return f"stream-ts:{ts}" if isinstance(ts, int) and not isinstance(ts, bool) else None


def resolve_path(body: dict, path: str) -> Any:
    """A dotted path: into payload.object, or from the root when it starts with payload. or an envelope field."""
    parts = path.split(".")
    if parts[0] in ENVELOPE_FIELDS:
        node: Any = body
    else:
        payload = body.get("payload")
        node = payload.get("object", MISSING) if isinstance(payload, dict) else MISSING
    for part in parts:
        if isinstance(node, dict):
            node = node.get(part, MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def decimal_id(value: Any) -> str | None:
    """A meeting id as a decimal string (never through float), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 < value < 10**20:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return str(int(value))
    return None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number as a float; one beyond float range (1e400) would be stored as a non-JSON Infinity."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise PayloadError(f"the number {text[:40]} is beyond the range of a float: Zoom never sends one")
    return value


def _short(exc: BaseException) -> str:
    return str(exc)[:120] if not isinstance(exc, RecursionError) else "nested too deeply"


def _depth(value: Any, limit: int = MAX_DEPTH + 1) -> int:
    """Nesting depth, counted iteratively and capped at `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest >= limit:
                return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
