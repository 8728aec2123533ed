"""Events from the command line (send, explain): a built-in sample or a JSON file, changed by --topic,
--meeting-id, --host-id and --at."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from ..samples import sample, sample_names, set_field
from .registry import arg



def event_time(text: str) -> int:
    """--at: an ISO 8601 time with its UTC offset, or epoch milliseconds; as Zoom's event_ts (ms)."""
    if text.isdigit():
        if int(text) < 10**11:
            raise argparse.ArgumentTypeError(f"{text} looks like seconds: event_ts is in milliseconds "
                                             f"({int(text) * 1000})")
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: use ISO 8601 with an offset, e.g. "
                                         "2026-11-30T10:30:00+01:00 or 2026-11-30T09:30:00Z, or epoch ms") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add one, e.g. {text}Z or {text}+01:00")
    return int(when.timestamp() * 1000)


EVENT_ARGUMENTS = (
    arg("event", nargs="?", metavar="EVENT",
        help="a built-in sample (" + ", ".join(sample_names()) + ") or an event JSON file"),
    arg("--file", metavar="PATH", help="an event JSON file (the same as giving it as EVENT)"),
    arg("--topic", help="set payload.object.topic"),
    arg("--meeting-id", metavar="ID", help="set payload.object.id"),
    arg("--host-id", metavar="ID", help="set payload.object.host_id"),
    arg("--at", type=event_time, metavar="TIME",
        help="the event's time (event_ts): ISO 8601 with offset, e.g. 2026-11-30T10:30:00+01:00, or epoch ms"),
)


def event_body(args) -> tuple[dict, bool]:
    """The event a command's EVENT/--file and --topic/--meeting-id/--host-id/--at describe, and whether
    it came from a file. A wrong argument ends the command with its usage."""
    if args.event and args.file:
        args.usage_error("give the event once: a sample name or a file as EVENT, or --file PATH")
    name = args.file or args.event
    if not name:
        args.usage_error("name the event: a built-in sample (e.g. meeting.started) or --file PATH")
    from_file = bool(args.file) or name.endswith(".json") or Path(name).is_file()
    if from_file:
        try:
            body = json.loads(Path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            args.usage_error(f"cannot read the event file {name}: {exc}")
        if not isinstance(body, dict):
            args.usage_error(f"{name} holds no event: a Zoom event is a JSON object with an \"event\" name")
    else:
        try:
            body = sample(name)
        except KeyError as exc:
            args.usage_error(exc.args[0] + " (or give an event JSON file)")
    for path, value in (("topic", args.topic), ("id", args.meeting_id), ("host_id", args.host_id)):
        if value is not None:
            set_field(body, path, value)
    if args.at is not None:
        body["event_ts"] = args.at
    return body, from_file


def _utc(ts_ms) -> str:
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
        return "no event_ts"
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%a %Y-%m-%d %H:%M:%SZ")


