"""The factory: settings, store, rules, dispatcher, blueprint."""
from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass, field

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from . import metrics
from .console import init_console
from .errors import SchemaError, StoreError
from .housekeeping import start_housekeeping
from .ingest import Ingester
from .live_rules import ActiveRules, config_stamp
from .logs import configure_logging, log
from .notify import AlertSweep
from .rules.match import RuleSet
from .settings import Settings
from .store import Store, open_store
from .web import MAX_BODY, TOO_LARGE, Backlog, Readiness, RejectionLog, Webhooks, bp


@dataclass
class Reactor:
    """What the web edge needs, attached to the Flask app as app.extensions['reactor']."""

    settings: Settings
    store: Store
    rules: ActiveRules
    dispatcher: object | None = None
    ingester: Ingester | None = None  # with REACTOR_INGEST=inline (the default)
    readiness: Readiness | None = None
    backlog: Backlog | None = None
    rejections: RejectionLog = field(default_factory=RejectionLog)
    alerts: AlertSweep | None = None  # with REACTOR_ALERT_URL set

    def __post_init__(self):
        if self.readiness is None:
            self.readiness = Readiness(self.store)
        if self.backlog is None:
            self.backlog = Backlog(self.store, self.settings.inbox_limit)

    def wake_dispatcher(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()


def create_app(settings: Settings | None = None, rules: RuleSet | None = None) -> Flask:
    """A reactor web app. Settings default to the environment, rules to what the gunicorn master
    validated (else the files); invalid settings or rules raise."""
    configure_logging()
    settings = settings or Settings.from_env()
    if settings.metrics:
        metrics.enable()
    active = ActiveRules(settings, rules)
    store = open_store(settings.database_url)
    try:
        store.check_schema()
    except SchemaError:
        raise
    except StoreError as exc:  # the database is down for now: start anyway, /readyz and webhooks say 503
        log("the database is unavailable at start-up; answering 503 until it is back", 40, error=str(exc))
    reactor = Reactor(settings, store, active)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY  # the one body limit: werkzeug answers 413 through too_large()
    app.extensions["reactor"] = reactor
    app.register_blueprint(bp)
    app.wsgi_app = Webhooks(app.wsgi_app, reactor)  # the webhook path, in front of Flask
    init_console(app, settings)  # /console: the operator console, or a 404 saying how to turn it on
    _json_errors(app)

    if settings.dispatch == "inline":
        from .dispatch import Dispatcher

        reactor.dispatcher = Dispatcher(store, settings, lambda: active.accounts)
        reactor.dispatcher.start()
        store.listen(reactor.dispatcher.wake)
    if settings.ingest == "inline":
        reactor.ingester = Ingester(store, active, settings, reactor.wake_dispatcher)
        reactor.ingester.start()
    if settings.alert_url:
        reactor.alerts = AlertSweep(store, settings, reactor.wake_dispatcher)
    tasks = [lambda: _reload(active, reactor.alerts), store.maintain, reactor.backlog]
    if reactor.alerts is not None:
        tasks.append(reactor.alerts)
    start_housekeeping(*tasks)
    gc.freeze()  # what start-up built (rules, app) lives as long as the process: keep it out of every GC pass
    log("reactor ready", pid=os.getpid(), rules=len(active.current.rules), version=active.current.version,
        dry_run=settings.dry_run, dispatch=settings.dispatch, ingest=settings.ingest, store=settings.database_url.split(":", 1)[0])
    return app


def _reload(active: ActiveRules, alerts: AlertSweep | None) -> None:
    """Reload the rules when their files changed; a rejected reload is counted and alerted (once per
    files' state and errors: every process sees the same)."""
    before = active.last_error
    active.reload_if_changed()
    if active.last_error and active.last_error != before:
        metrics.reload_failed()
        if alerts is not None:
            digest = hashlib.sha256(f"{config_stamp(active.settings)}{active.last_error}".encode()).hexdigest()
            alerts.note(f"alert:reload:{digest[:16]}",
                        f":warning: reactor: the changed rules in {active.settings.rules_path} were rejected; the "
                        f"previous rules (version {active.current.version}) stay active. Fix, then check with "
                        f"`python -m reactor check`: {active.last_error[:1500]}")


def _json_errors(app: Flask) -> None:
    """Short JSON answers that name no path of this server; each refusal is logged (rate-limited)."""

    def refused(status: int, message: str, reason: str):
        app.extensions["reactor"].rejections.flask(status, reason)
        return jsonify({"error": message}), status

    @app.errorhandler(404)
    def not_found(_):
        return refused(404, "not found", "no such path")

    @app.errorhandler(405)
    def not_allowed(_):
        return refused(405, "method not allowed", "method not allowed on this path")

    @app.errorhandler(413)
    def too_large(_):
        return refused(413, TOO_LARGE, f"body over {MAX_BODY} bytes")

    @app.errorhandler(Exception)
    def unexpected(exc):
        if isinstance(exc, HTTPException):
            return jsonify({"error": exc.description}), exc.code
        log("unexpected error", 40, error=type(exc).__name__)
        return jsonify({"error": "internal error; the delivery was not stored, Zoom will retry"}), 500
