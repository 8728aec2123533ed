"""The schema both backends share: the DDL, its version, and the one place that says which columns a
delivery and its jobs are stored in (each backend inserts these rows its own way)."""
from __future__ import annotations

import json

from ..delivery import NewDelivery
from ..plan import PlannedAction

SCHEMA_VERSION = 6
TOPIC_CHARS = 300  # the searchable topic kept beside the body (the console's ?q=)


def delivery_row(delivery: NewDelivery, delivery_id: int | None = None) -> dict:
    """The deliveries row for a new delivery; `delivery_id`: its inbox seq (None: the backend's next one)."""
    return {"id": delivery_id, "dedup_key": delivery.dedup_key, "event": delivery.event, "event_ts": delivery.event_ts_ms,
            "order_key": delivery.order_key, "instance": delivery.instance, "received_at": delivery.received_at,
            "topic": delivery.topic[:TOPIC_CHARS], "account": delivery.account,
            "body": delivery.body_text or json.dumps(delivery.body), "verdicts": delivery.verdicts}


def job_rows(delivery: NewDelivery, actions: list[PlannedAction], deadline: float) -> list[dict]:
    """The jobs rows for a new delivery's planned actions: pending, due at once, in plan order."""
    return [{"dedup_key": delivery.dedup_key, "seq": seq, "rule": action.rule, "kind": action.kind,
             "action": json.dumps(action.to_dict()), "order_key": action.order_key, "account": action.account,
             "instance": delivery.instance, "event_ts": delivery.event_ts_ms, "due_at": delivery.received_at,
             "deadline": deadline}
            for seq, action in enumerate(actions)]


def migrations(ident: str, real: str, text_json: str = "TEXT", postgres: bool = False) -> list[str]:
    """The DDL, step by step: migrations(...)[v] takes a database from schema version v to v + 1.
    With the dialect's auto-increment key, float and JSON text types."""
    return [_version_1(ident, real, text_json), _version_2(real), _version_3(), _version_4(),
            _version_5(real, postgres), _version_6()]


def _version_6() -> str:
    """Each inbox row's order key (the meeting or webinar it is about, "" for none): an action waits
    while a delivery about its meeting, acknowledged before its own, is still in the inbox. Rows appended
    before this step have none (NULL) and hold every newer action until they are ingested."""
    return "ALTER TABLE inbox ADD COLUMN order_key TEXT;"


def _version_5(real: str, postgres: bool) -> str:
    """The inbox: what the request path appends before its 200 (the redacted body, the dedup key, the
    account whose token verified it), keyed by a sequence that becomes the delivery's id, with no other
    index to write; the ingester turns its rows into deliveries and jobs and deletes them in one
    transaction. A duplicate's seq is kept beside the delivery it repeats, so the `delivery` number of
    every 200 can be looked up. Numbering continues after the deliveries already stored; on PostgreSQL
    deliveries take their ids from the same sequence.

    And the name of the account each delivery came through, for `history --account` and the console.
    Deliveries stored before this step show none; jobs already carry theirs (jobs.account: the account
    name, or for jobs queued before, the event's account_id)."""
    account = "ALTER TABLE deliveries ADD COLUMN account TEXT NOT NULL DEFAULT '';"
    if postgres:
        return f"""
{account}
CREATE TABLE IF NOT EXISTS inbox (seq BIGSERIAL PRIMARY KEY, received_at {real} NOT NULL, body TEXT NOT NULL,
    dedup_key TEXT NOT NULL, account TEXT NOT NULL);
SELECT setval(pg_get_serial_sequence('inbox', 'seq'), (SELECT coalesce(max(id), 0) + 1 FROM deliveries), false);
ALTER TABLE deliveries ALTER COLUMN id SET DEFAULT nextval(pg_get_serial_sequence('inbox', 'seq'));
CREATE TABLE IF NOT EXISTS duplicates (seq BIGINT PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE, received_at {real} NOT NULL);
CREATE INDEX IF NOT EXISTS duplicates_delivery ON duplicates (delivery_id);
"""
    return f"""
{account}
CREATE TABLE IF NOT EXISTS inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at {real} NOT NULL,
    body TEXT NOT NULL, dedup_key TEXT NOT NULL, account TEXT NOT NULL);
INSERT INTO sqlite_sequence (name, seq) SELECT 'inbox', coalesce(max(id), 0) FROM deliveries;
CREATE TABLE IF NOT EXISTS duplicates (seq INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE, received_at {real} NOT NULL);
CREATE INDEX IF NOT EXISTS duplicates_delivery ON duplicates (delivery_id);
"""


def _version_4() -> str:
    """The console's reads: a searchable topic, deliveries by event and by instance walked newest first,
    the time index covering the event (counts by event without reading rows), meetings by (key, id).
    Deliveries stored before this step keep an empty topic: the topic search does not find them."""
    return """
ALTER TABLE deliveries ADD COLUMN topic TEXT NOT NULL DEFAULT '';
DROP INDEX IF EXISTS deliveries_received;
DROP INDEX IF EXISTS deliveries_order_key;
CREATE INDEX IF NOT EXISTS deliveries_received_event ON deliveries (received_at, event);
CREATE INDEX IF NOT EXISTS deliveries_order_key_id ON deliveries (order_key, id);
CREATE INDEX IF NOT EXISTS deliveries_event_id ON deliveries (event, id);
CREATE INDEX IF NOT EXISTS deliveries_instance ON deliveries (instance);
"""


def _version_2(real: str) -> str:
    """The meeting instance (payload.object.uuid) of each delivery and job, so Zoom's confirmations
    settle only their own instance's actions; one row per dispatching process, its heartbeat."""
    return f"""
ALTER TABLE deliveries ADD COLUMN instance TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN instance TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS processes (
    owner TEXT PRIMARY KEY,
    started_at {real} NOT NULL,
    seen_at {real} NOT NULL
);
"""


def _version_3() -> str:
    """Zoom's x-zm-trackingid of each answer, which Zoom support asks for."""
    return "ALTER TABLE attempts ADD COLUMN tracking_id TEXT NOT NULL DEFAULT ''"


def _version_1(ident: str, real: str, text_json: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS deliveries (
    id {ident},
    dedup_key TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    event_ts BIGINT NOT NULL,
    order_key TEXT NOT NULL,
    received_at {real} NOT NULL,
    body {text_json} NOT NULL,
    verdicts {text_json} NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries (received_at);
CREATE INDEX IF NOT EXISTS deliveries_order_key ON deliveries (order_key);
CREATE TABLE IF NOT EXISTS jobs (
    id {ident},
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    action {text_json} NOT NULL,
    order_key TEXT NOT NULL,
    account TEXT NOT NULL,
    event_ts BIGINT NOT NULL,
    status TEXT NOT NULL,
    due_at {real} NOT NULL,
    deadline {real} NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until {real} NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_message TEXT NOT NULL DEFAULT '',
    confirmed_at {real},
    updated_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, due_at);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs (order_key, status, event_ts);
CREATE INDEX IF NOT EXISTS jobs_delivery ON jobs (delivery_id);
CREATE TABLE IF NOT EXISTS attempts (
    id {ident},
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at {real} NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    zoom_code BIGINT,
    message TEXT NOT NULL,
    next_at {real},
    duration_ms {real},
    sent {text_json} NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts (job_id);
CREATE TABLE IF NOT EXISTS pacing (
    account TEXT PRIMARY KEY,
    slot {real} NOT NULL
);
"""
