"""Pure: from an event and the rules it matched, the Zoom calls to make, as plain values.

A PlannedAction is all the dispatcher needs: it never looks at the rule that made it. Secret
values travel as {"$secret": "<reference>"} and are resolved only for the HTTP call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .accounts import DEFAULT
from .events import MISSING, Event
from .redact import SECRET_MARK
from .rules.model import Rule, Secret, Template

DISPLAY_NAME_MAX = 50
DISPLAY_NAME_FALLBACK = "Live stream"
MEETING_ONLY_SETTINGS = ("layout", "close_caption")  # Zoom's webinar live stream status takes neither


@dataclass(frozen=True)
class PlannedAction:
    rule: str
    kind: str            # livestream.start | livestream.stop | livestream.configure | notify | alert
    method: str
    path: str            # relative to ZOOM_API_URL, e.g. /meetings/85746065432/livestream/status; for notify
                         # and alert: the chat webhook URL's secret reference or setting name, never the URL
    body: dict
    order_key: str       # actions with the same key run one at a time, in event order
    account: str         # the account whose credentials and pacing the call uses (its name; "chat" for
                         # notify and alert)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "kind": self.kind, "method": self.method, "path": self.path, "body": self.body,
                "order_key": self.order_key, "account": self.account}

    @classmethod
    def from_dict(cls, data: dict) -> "PlannedAction":
        return cls(**data)


@dataclass(frozen=True)
class Skipped:
    rule: str
    kind: str
    reason: str


def plan(event: Event, rules: list[Rule], account: str = DEFAULT) -> tuple[list[PlannedAction], list[Skipped]]:
    """The calls the matched `rules` ask for on `event`, in rule order then action order, made with the
    credentials of `account` (the name of the account the event came through)."""
    target = event.target
    planned, skipped = [], []
    for rule in rules:
        for action in rule.actions:
            if action.kind == "notify":
                planned.append(notify(rule.name, dict(action.args), event))
                continue
            if target is None:
                skipped.append(Skipped(rule.name, action.kind, "the event names no meeting or webinar id "
                                                               "(payload.object.id)"))
                continue
            base = f"/{target.kind}/{target.id}/livestream"
            args = {name: render(value, event) for name, value in action.args}
            if action.kind == "livestream.configure":
                path, body = base, args
            else:
                path = base + "/status"
                body = {"action": "start" if action.kind == "livestream.start" else "stop"}
                if action.kind == "livestream.start":
                    if target.kind == "webinars":
                        for key in MEETING_ONLY_SETTINGS:
                            args.pop(key, None)
                    if isinstance(args.get("display_name"), str):
                        args["display_name"] = display_name(args["display_name"], event)
                    body["settings"] = args
            planned.append(PlannedAction(rule=rule.name, kind=action.kind, method="PATCH", path=path, body=body,
                                         order_key=target.key,
                                         account=account))
    return planned, skipped


def notify(rule: str, args: dict, event: Event) -> PlannedAction:
    """A message to a chat webhook: in its own order (per meeting), so it never waits for or delays a Zoom call."""
    body = {"text": render(args["text"], event)}
    if "format" in args:
        body["format"] = args["format"]
    return PlannedAction(rule=rule, kind="notify", method="POST", path=args["url"].ref, body=body,
                         order_key=f"notify:{event.order_key or event.name}", account="chat")


def display_name(rendered: str, event: Event) -> str:
    """What Zoom gets as display_name (1-50 characters): the rendered text, or when a template rendered
    nothing but spaces, the event's topic, else "Live stream"."""
    if not rendered.strip():
        topic = event.field("topic")
        rendered = topic if isinstance(topic, str) and topic.strip() else DISPLAY_NAME_FALLBACK
    return rendered[:DISPLAY_NAME_MAX]


def render(value: Any, event: Event) -> Any:
    """A rule's setting for this event: templates filled in, secrets kept as references."""
    if isinstance(value, Secret):
        return {SECRET_MARK: value.ref}
    if isinstance(value, Template):
        out = []
        for part in value.parts:
            if isinstance(part, tuple):
                seen = event.field(part[1])
                out.append("" if seen is MISSING or seen is None or isinstance(seen, (dict, list)) else str(seen))
            else:
                out.append(part)
        return "".join(out)
    return value
