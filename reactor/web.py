"""Edge: the HTTP endpoints. POST /webhooks/zoom[/<account>], GET /healthz, GET /readyz, GET /metrics.

The webhook is answered by a plain WSGI route in front of Flask (Webhooks): Flask's request context,
routing and response objects cost about as much CPU as everything reactor does before the append
(measured: a bare WSGI 204 under the same gunicorn answers 1.8x a bare Flask 204's rate). Everything
else (health, readiness, metrics, the console) is Flask's.

What a stranger can learn here is the least that lets Zoom and a load balancer work: a webhook is
accepted or refused with a short reason (details after a valid signature only), health and readiness
answer a status and nothing else. Why a request was refused goes to the log, rate-limited.
"""
from __future__ import annotations

import hmac
import json
import threading
import time
from http import HTTPStatus

from flask import Blueprint, Response, current_app, jsonify, request

from . import metrics
from .errors import PayloadError, SignatureError, StoreError
from .logs import log
from .receive import Reply, admit

WEBHOOK_PATH = "/webhooks/zoom"

MAX_BODY = 1024 * 1024  # the app sets it as MAX_CONTENT_LENGTH
READY_FOR = 1.5          # seconds a /readyz answer is reused in a process: a flood of checks costs one a second
REJECTIONS_LOGGED = 20   # rejected requests logged per process per REJECTION_WINDOW; the rest are counted
REJECTION_WINDOW = 60.0
TOO_LARGE = (f"the body is larger than {MAX_BODY} bytes (1 MiB): Zoom's events are far smaller; this is not a "
             f"Zoom delivery")
NOT_SIGNED = ("this is not a signed Zoom delivery for this endpoint (check the Secret Token and the server's "
              "clock; the server log says which)")

bp = Blueprint("reactor", __name__)


def _error(status: int, message: str):
    return jsonify({"error": message}), status


class RejectionLog:
    """Logs rejected requests, at most `limit` per `window` seconds in a process, so a flood of probes
    cannot fill the log; when a window had more, the next rejection first logs how many went unlogged."""

    def __init__(self, limit: int = REJECTIONS_LOGGED, window: float = REJECTION_WINDOW, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._lock = threading.Lock()
        self._start, self._logged, self._dropped = float("-inf"), 0, 0

    def __call__(self, status: int, reason: str, method: str, path: str, remote: str | None, **fields) -> None:
        """Log one rejected request (never its headers' values or body)."""
        with self._lock:
            now = self.clock()
            dropped = 0
            if now - self._start >= self.window:
                dropped, self._start, self._logged, self._dropped = self._dropped, now, 0, 0
            if self._logged >= self.limit:
                self._dropped += 1
                return
            self._logged += 1
        if dropped:
            log("rejected requests left out of the log (rate limit)", 30, count=dropped, window_s=self.window)
        log("rejected request", 30, status=status, reason=reason, method=method, path=path[:200], remote=remote,
            **fields)

    def flask(self, status: int, reason: str, **fields) -> None:
        """Log one rejected request of the current Flask request."""
        self(status, reason, request.method, request.path, request.remote_addr, **fields)


class Readiness:
    """Whether this process can commit, checked at most once per `ttl` seconds: every /readyz in
    between answers from the last check, and while one check runs the others answer from the one before."""

    def __init__(self, store, ttl: float = READY_FOR, clock=time.monotonic):
        self.store, self.ttl, self.clock = store, ttl, clock
        self._lock = threading.Lock()
        self._ready: bool | None = None
        self._at = float("-inf")

    def ready(self) -> bool:
        if self._ready is not None and self.clock() - self._at < self.ttl:
            return self._ready
        if not self._lock.acquire(blocking=self._ready is None):
            return self._ready  # another thread is checking now
        try:
            if self._ready is None or self.clock() - self._at >= self.ttl:
                try:
                    self.store.ping()
                    ready = True
                except StoreError as exc:
                    ready = False
                    log("not ready: the database cannot take writes", 40, error=str(exc))
                self._ready, self._at = ready, self.clock()
            return self._ready
        finally:
            self._lock.release()


class Backlog:
    """Whether the inbox holds more than `limit` deliveries: a full inbox (the ingesters are behind) makes
    webhooks answer 503 instead of growing it. Counted by the process's housekeeping (every 2 s), never
    on the request path, so a database that has gone away delays no webhook by it."""

    __name__ = "inbox_backlog"

    def __init__(self, store, limit: int):
        self.store, self.limit = store, limit
        self.full = False

    def __call__(self) -> None:
        try:
            self.full = self.store.inbox_backlog() > self.limit
        except StoreError:
            self.full = False  # the append will fail and say so


def _skew(timestamp: str | None, now: float) -> int | None:
    """Seconds between this server's clock and the delivery's timestamp header (positive: the header is
    behind), for the log; None when the header is not Unix seconds."""
    ts = (timestamp or "").strip()
    return int(now - int(ts)) if ts.isascii() and ts.isdigit() and len(ts) <= 12 else None


class Webhooks:
    """WSGI: POST /webhooks/zoom and /webhooks/zoom/<account> answered here; any other request goes on to
    `app` (Flask). `reactor`: the process's Reactor (settings, rules, store, ingester)."""

    def __init__(self, app, reactor):
        self.app, self.reactor = app, reactor

    def __call__(self, req, start_response):  # req: the request's WSGI environ
        path = req.get("PATH_INFO", "")
        base, slash, rest = path.partition(WEBHOOK_PATH + "/")
        if path == WEBHOOK_PATH:
            name = None
        elif slash and not base and rest and "/" not in rest:
            name = rest.encode("latin-1").decode("utf-8", "replace")  # WSGI's PATH_INFO: bytes as latin-1
        else:
            return self.app(req, start_response)
        try:
            status, body = self._answer(req, path, name)
        except Exception as exc:  # a bug: nothing was acknowledged; Zoom retries a 500
            log("unexpected error", 40, error=type(exc).__name__)
            status, body = 500, {"error": "internal error; the delivery was not stored, Zoom will retry"}
        if status == 200 and body.get("status") == "accepted":  # the common answer, without an encoder
            data = b'{"delivery":%d,"status":"accepted"}\n' % body["delivery"]
        else:
            data = _COMPACT.encode(body).encode() + b"\n"
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(_STATUS_LINES[status], headers + [("Allow", "POST")] if status == 405 else headers)
        return [data]

    def _answer(self, req, path: str, name: str | None) -> tuple[int, dict]:
        reactor = self.reactor
        method, remote = req.get("REQUEST_METHOD", ""), req.get("REMOTE_ADDR")
        if method != "POST":
            reactor.rejections(405, "method not allowed on this path", method, path, remote)
            return 405, {"error": "method not allowed"}
        raw = _body(req)
        if raw is None:
            reactor.rejections(413, f"body over {MAX_BODY} bytes", method, path, remote)
            return 413, {"error": TOO_LARGE}
        now = time.time()
        timestamp = req.get("HTTP_X_ZM_REQUEST_TIMESTAMP")
        try:
            settings, active = reactor.settings, reactor.rules
            outcome = admit(raw, timestamp, req.get("HTTP_X_ZM_SIGNATURE"), accounts=active.accounts,
                            tolerance=settings.signature_tolerance, now=now, name=name)
        except SignatureError as exc:  # the reason, the tolerance and the clock skew are for the log only
            reactor.rejections(401, str(exc), method, path, remote, skew_s=_skew(timestamp, now), bytes=len(raw))
            metrics.webhook("-", "rejected_signature", time.time() - now)
            if reactor.alerts is not None:
                reactor.alerts.bad_signature()
            return 401, {"error": NOT_SIGNED}
        except PayloadError as exc:  # the signature verified (the sender holds the Secret Token), or no such account
            reactor.rejections(exc.status, str(exc), method, path, remote, bytes=len(raw))
            metrics.webhook("-", "rejected_payload", time.time() - now)
            return exc.status, {"error": str(exc)}
        if isinstance(outcome, Reply):
            metrics.webhook("endpoint.url_validation", "reply", time.time() - now)
            return 200, outcome.body
        if reactor.backlog.full:
            log("the inbox is full; answered 503 so Zoom retries", 40, event=outcome.event.name,
                limit=settings.inbox_limit)
            metrics.webhook(outcome.event.name, "inbox_full", time.time() - now)
            if reactor.alerts is not None:
                reactor.alerts.inbox_full()
            return 503, {"error": "reactor is behind with the deliveries it acknowledged; Zoom will retry this one"}
        try:
            seq = reactor.store.append(outcome.text, outcome.event.dedup_key, outcome.account, now,
                                       outcome.event.order_key)
        except StoreError as exc:
            log("store unavailable; answered 503 so Zoom retries", 40, error=str(exc), event=outcome.event.name)
            metrics.webhook(outcome.event.name, "unavailable", time.time() - now)
            if reactor.alerts is not None:
                reactor.alerts.refused()
            return 503, {"error": "the database is unavailable; Zoom will retry this delivery"}
        if reactor.ingester is not None:
            reactor.ingester.hand(seq, now, outcome)
        metrics.webhook(outcome.event.name, "accepted", time.time() - now)
        return 200, {"status": "accepted", "delivery": seq}


_COMPACT = json.JSONEncoder(separators=(",", ":"), sort_keys=True)  # as Flask's jsonify wrote them; one encoder:
# json.dumps with arguments makes one per call
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def _body(req) -> bytes | None:
    """The request's body, or None when it is over MAX_BODY (refused before reading, when its length says so)."""
    stream = req["wsgi.input"]
    try:
        length = int(req.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > MAX_BODY:
        return None
    if length >= 0:
        return stream.read(length)
    if not req.get("wsgi.input_terminated"):  # no length and not chunked: no body
        return b""
    raw = stream.read(MAX_BODY + 1)  # chunked: read one byte past the limit to know it was passed
    return None if len(raw) > MAX_BODY else raw


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz():
    """Ready means this process can commit a delivery. The status only: the rules' state, the database's
    error and where it lives are in the log and `python -m reactor` commands, not on the internet."""
    if current_app.extensions["reactor"].readiness.ready():
        return jsonify({"status": "ready"}), 200
    return jsonify({"status": "unavailable"}), 503


@bp.get("/metrics")
def metrics_page():
    """Prometheus' text format: every process's counters on this machine, the outbox read from the store.
    404 with REACTOR_METRICS=0; with REACTOR_METRICS_TOKEN set, 401 without `Authorization: Bearer <it>`."""
    reactor = current_app.extensions["reactor"]
    if not metrics.enabled():
        return _error(404, "not found")
    token = reactor.settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            reactor.rejections.flask(401, "metrics scrape without the right bearer token")
            return _error(401, "this needs Authorization: Bearer <REACTOR_METRICS_TOKEN>")
    try:
        body, content_type = metrics.exposition(reactor.store.outbox, reactor.rules.current.version)
    except StoreError as exc:
        log("metrics: the store is unavailable", 40, error=str(exc))
        return _error(503, "the database is unavailable; the outbox cannot be read")
    return Response(body, status=200, content_type=content_type)
