"""Pure: the fields each Zoom event carries, so `check` can catch a field path that is never there.

A path is relative to payload.object (`topic`, `participant.email`) or starts at the root with an
envelope field (`event`, `event_ts`, `payload.account_id`). A path ending in `.*` in the tables below
opens an object whose inside Zoom does not fix (settings, recording files): anything below it is
accepted. A path the author writes from the root as `payload.…` is taken as written: that is the way
to reach a field reactor does not list here (`payload.object.custom_field`).

Sources: Zoom's webhook reference as summarised in PLATFORM.md ("Event payloads") and the shapes of
reactor/samples; the created/updated/deleted and recording payloads follow Zoom's reference.
"""
from __future__ import annotations

ENVELOPE = ("event", "event_ts", "payload", "payload.account_id", "payload.object")

_INSTANCE = ("id", "uuid", "host_id", "host_email", "topic", "type", "start_time", "timezone", "duration")
_PARTICIPANT = tuple(f"participant.{name}" for name in (
    "user_id", "user_name", "id", "participant_user_id", "participant_uuid", "join_time", "leave_time",
    "leave_reason", "email", "registrant_id", "customer_key", "phone_number", "public_ip", "private_ip"))
_LIVE_STREAMING = ("live_streaming.service", "live_streaming.date_time",
                   *(f"live_streaming.custom_live_streaming_settings.{name}"
                     for name in ("stream_url", "stream_key", "page_url", "resolution")),
                   "payload.operator", "payload.operator_id")
_SCHEDULE = ("password", "agenda", "start_url", "join_url", "created_at", "pmi", "occurrence_id",
             "settings.*", "recurrence.*", "occurrences.*", "tracking_fields.*", "payload.operator",
             "payload.operator_id", "payload.old_object.*", "payload.time_stamp")
_SHARING = ("participant.user_id", "participant.user_name", "participant.id", "participant.email",
            "participant.participant_uuid", "participant.sharing_details.*")
_RECORDING = ("account_id", "total_size", "recording_count", "share_url", "password", "recording_play_passcode",
              "recording_files.*", "participant_audio_files.*", "download_token")

EVENT_FIELDS: dict[str, frozenset] = {
    "meeting.started": frozenset(_INSTANCE),
    "meeting.ended": frozenset((*_INSTANCE, "end_time")),
    "meeting.participant_joined": frozenset((*_INSTANCE, *_PARTICIPANT)),
    "meeting.participant_left": frozenset((*_INSTANCE, *_PARTICIPANT)),
    "meeting.live_streaming_started": frozenset((*_INSTANCE, *_LIVE_STREAMING)),
    "meeting.live_streaming_stopped": frozenset((*_INSTANCE, *_LIVE_STREAMING)),
    "meeting.created": frozenset((*_INSTANCE, *_SCHEDULE)),
    "meeting.updated": frozenset((*_INSTANCE, *_SCHEDULE)),
    "meeting.deleted": frozenset((*_INSTANCE, *_SCHEDULE)),
    "webinar.started": frozenset(_INSTANCE),
    "webinar.ended": frozenset((*_INSTANCE, "end_time")),
    "webinar.participant_joined": frozenset((*_INSTANCE, *_PARTICIPANT)),
    "webinar.participant_left": frozenset((*_INSTANCE, *_PARTICIPANT)),
    "webinar.created": frozenset((*_INSTANCE, *_SCHEDULE)),
    "webinar.updated": frozenset((*_INSTANCE, *_SCHEDULE)),
    "webinar.deleted": frozenset((*_INSTANCE, *_SCHEDULE)),
    "recording.completed": frozenset((*_INSTANCE, *_RECORDING)),
    "meeting.sharing_started": frozenset((*_INSTANCE, *_SHARING)),
    "meeting.sharing_ended": frozenset((*_INSTANCE, *_SHARING)),
}
KNOWN_EVENTS = tuple(EVENT_FIELDS)


def field_known(path: str, events) -> bool:
    """Whether `path` can be present in at least one of `events` (all known event names).

    An object on the way to a known field counts (`participant`, for `exists:`), and so does
    anything below an open object (`recording_files.0.file_type`) or written from `payload.`."""
    if path.startswith("payload.") or path in ENVELOPE:
        return True
    for name in events:
        for known in EVENT_FIELDS.get(name, ()):
            if known.endswith(".*"):
                stem = known[:-2]
                if path == stem or path.startswith(stem + ".") or stem.startswith(path + "."):
                    return True
            elif path == known or known.startswith(path + "."):
                return True
    return False


def field_names(events) -> list[str]:
    """Every path a rule on `events` may use, for 'did you mean' (without the .* of open objects)."""
    names = {known[:-2] if known.endswith(".*") else known for name in events for known in EVENT_FIELDS.get(name, ())}
    return sorted(n for n in names if not n.startswith("payload."))
