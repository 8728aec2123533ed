"""Edge: the HTTP endpoints. POST /webhooks/zoom, GET /healthz, GET /readyz."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from .errors import PayloadError, SignatureError, StoreError
from .logs import log
from .receive import Reply, receive

MAX_BODY = 1024 * 1024  # the app sets it as MAX_CONTENT_LENGTH

bp = Blueprint("reactor", __name__)


def _error(status: int, message: str):
    return jsonify({"error": message}), status


@bp.post("/webhooks/zoom")
def webhook():
    reactor = current_app.extensions["reactor"]
    raw = request.get_data(cache=False)  # over MAX_BODY (the app's MAX_CONTENT_LENGTH): 413, answered by the app
    now = time.time()
    try:
        outcome = receive(raw, request.headers.get("x-zm-request-timestamp"), request.headers.get("x-zm-signature"),
                          secret=reactor.settings.webhook_secret, tolerance=reactor.settings.signature_tolerance,
                          rules=reactor.rules.current, now=now, action_deadline=reactor.settings.action_deadline)
    except SignatureError as exc:
        return _error(401, str(exc))
    except PayloadError as exc:
        return _error(exc.status, str(exc))
    if isinstance(outcome, Reply):
        return jsonify(outcome.body), 200
    try:
        accepted = reactor.store.accept(outcome.record, outcome.actions, outcome.deadline)
    except StoreError as exc:
        log("store unavailable; answered 503 so Zoom retries", 40, error=str(exc))
        return _error(503, "the database is unavailable; Zoom will retry this delivery")
    if accepted.job_ids:
        reactor.wake_dispatcher()
    record = outcome.record
    log("duplicate" if accepted.duplicate else "accepted", event=record.event, delivery=accepted.delivery_id,
        target=record.order_key, matched=[v["rule"] for v in record.verdicts if v["matched"]],
        actions=len(accepted.job_ids), ms=round((time.time() - now) * 1000, 2))
    return jsonify({"status": "duplicate" if accepted.duplicate else "accepted",
                    "delivery": accepted.delivery_id, "actions": len(accepted.job_ids)}), 200


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz():
    reactor = current_app.extensions["reactor"]
    rules = reactor.rules
    info = {"rules": {"version": rules.current.version, "count": len(rules.current.rules),
                      "loaded_at": rules.loaded_at, "last_error": rules.last_error}}
    try:
        reactor.store.ping()
    except StoreError as exc:
        return jsonify({"status": "unavailable", "reason": str(exc), **info}), 503
    return jsonify({"status": "ready", **info}), 200
