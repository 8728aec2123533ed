"""A bench peer, never part of reactor: the webhook receiver a careful user would write in Flask instead of
running reactor, so that `make bench` can show what reactor's ingest achieves against it on the same machine.

It does what such a receiver must and nothing more: check the signature (HMAC-SHA256 of `v0:{ts}:{body}`,
compared in constant time, timestamp within 5 minutes), answer Zoom's URL validation, parse the JSON, and
store the raw body durably before answering: one INSERT and one commit per request into a SQLite file in WAL
mode with `synchronous=FULL` (an fsync behind every 200), one connection per thread. It has no rules, no
deduplication and no outbox. It depends on nothing of reactor's on purpose (a user's app would not), and is
served by reactor's own gunicorn settings, so the two differ only in what the app does.

CAREFUL_DB: the SQLite file (the bench sets it). ZOOM_WEBHOOK_SECRET_TOKEN: the app's Secret Token.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time

from flask import Flask, jsonify, request

TOLERANCE = 300  # seconds between x-zm-request-timestamp and this clock


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _signed(secret: bytes, timestamp: str, signature: str, body: bytes) -> bool:
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    expected = "v0=" + hmac.new(secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def create_app() -> Flask:
    path = os.environ["CAREFUL_DB"]
    secret = os.environ["ZOOM_WEBHOOK_SECRET_TOKEN"].encode()
    with _connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS deliveries (id INTEGER PRIMARY KEY, received REAL NOT NULL, "
                   "event TEXT NOT NULL, body BLOB NOT NULL)")
    local = threading.local()
    app = Flask(__name__)

    @app.post("/webhooks/zoom")
    def webhook():
        body = request.get_data()
        if not _signed(secret, request.headers.get("x-zm-request-timestamp", ""),
                       request.headers.get("x-zm-signature", ""), body):
            return jsonify(error="signature or timestamp invalid"), 401
        try:
            event = json.loads(body)
            name = event["event"]
        except (ValueError, TypeError, KeyError):
            return jsonify(error="body must be a JSON object with an 'event'"), 400
        if name == "endpoint.url_validation":
            plain = event.get("payload", {}).get("plainToken", "")
            return jsonify(plainToken=plain, encryptedToken=hmac.new(secret, plain.encode(), hashlib.sha256).hexdigest())
        if not hasattr(local, "db"):
            local.db = _connect(path)
        with local.db:  # commits (and fsyncs) before the answer, or rolls back
            row = local.db.execute("INSERT INTO deliveries (received, event, body) VALUES (?, ?, ?)",
                                   (time.time(), name, body)).lastrowid
        return jsonify(stored=row)

    @app.get("/readyz")
    def ready():
        return "ok"

    return app
