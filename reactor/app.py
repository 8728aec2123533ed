"""The factory: settings, store, rules, dispatcher, blueprint."""
from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass

from flask import Flask, jsonify

from .errors import RulesError, SchemaError, StoreError
from .logs import configure_logging, log
from .rules.load import load_rules, rule_files
from .rules.match import RuleSet
from .settings import Settings
from .store import Store, open_store
from .web import MAX_BODY, bp


class ActiveRules:
    """The rule set in force; replaced whole on reload, kept when the new files are invalid."""

    def __init__(self, settings: Settings, current: RuleSet | None = None, stamp: tuple | None = None):
        self.settings = settings
        self._stamp = files_stamp(settings.rules_path) if stamp is None else stamp
        self.current = current if current is not None else self._load()  # raises RulesError at start-up
        self.loaded_at = time.time()
        self.last_error = ""
        self._lock = threading.Lock()

    def _load(self) -> RuleSet:
        rules = load_rules(self.settings.rules_path, secret_key=self.settings.secret_key)
        for warning in rules.warnings:
            log("rules warning", 30, warning=warning)
        return rules

    def reload(self) -> bool:
        """Load the files again; on errors log them, keep the active set and return False."""
        with self._lock:
            self._stamp = files_stamp(self.settings.rules_path)
            try:
                new = self._load()
            except RulesError as exc:
                self.last_error = "; ".join(exc.problems)
                log("rules reload rejected; the previous rules stay active", 40, problems=exc.problems,
                    active_version=self.current.version)
                return False
            self.current, self.loaded_at, self.last_error = new, time.time(), ""
            log("rules reloaded", version=new.version, rules=len(new.rules))
            return True

    def reload_if_changed(self) -> None:
        if files_stamp(self.settings.rules_path) != self._stamp:
            self.reload()


def files_stamp(path: str) -> tuple:
    """What changes when a rule file is edited, added or removed."""
    try:
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in rule_files(path))
    except (RulesError, OSError):
        return ()


@dataclass
class Reactor:
    """What the web edge needs, attached to the Flask app as app.extensions['reactor']."""

    settings: Settings
    store: Store
    rules: ActiveRules
    dispatcher: object | None = None

    def wake_dispatcher(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()


def create_app(settings: Settings | None = None, rules: RuleSet | None = None) -> Flask:
    """A reactor web app. Settings default to the environment; invalid settings or rules raise."""
    configure_logging()
    settings = settings or Settings.from_env()
    stamp = None
    if rules is None:
        from . import boot  # rules validated by the gunicorn master, inherited across fork

        rules, stamp = boot.inherited_rules(settings)
    active = ActiveRules(settings, rules, stamp)
    store = open_store(settings.database_url)
    try:
        store.check_schema()
    except SchemaError:
        raise
    except StoreError as exc:  # the database is down for now: start anyway, /readyz and webhooks say 503
        log("the database is unavailable at start-up; answering 503 until it is back", 40, error=str(exc))
    reactor = Reactor(settings, store, active)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["reactor"] = reactor
    app.register_blueprint(bp)
    _json_errors(app)

    if settings.dispatch == "inline":
        from .dispatch import Dispatcher

        reactor.dispatcher = Dispatcher.from_settings(settings, store)
        reactor.dispatcher.start()
        store.listen(reactor.dispatcher.wake)
    start_housekeeping(active.reload_if_changed, store.maintain)
    gc.freeze()  # what start-up built (rules, app) lives as long as the process: keep it out of every GC pass
    log("reactor ready", pid=os.getpid(), rules=len(active.current.rules), version=active.current.version,
        dry_run=settings.dry_run, dispatch=settings.dispatch, store=settings.database_url.split(":", 1)[0])
    return app


def start_housekeeping(*tasks, every: float = 2.0) -> None:
    """One thread per process running `tasks` every few seconds (rule reloads, the store's upkeep)."""

    def loop():
        while True:
            time.sleep(every)
            for task in tasks:
                try:
                    task()
                except Exception as exc:  # housekeeping must never die
                    log("housekeeping error", 40, task=task.__name__, error=repr(exc))

    threading.Thread(target=loop, name="reactor-housekeeping", daemon=True).start()


def _json_errors(app: Flask) -> None:
    @app.errorhandler(404)
    def not_found(_):
        return jsonify({"error": "not found: Zoom webhooks go to POST /webhooks/zoom"}), 404

    @app.errorhandler(405)
    def not_allowed(_):
        return jsonify({"error": "method not allowed: Zoom webhooks are POST /webhooks/zoom"}), 405

    @app.errorhandler(413)
    def too_large(_):
        return jsonify({"error": f"the body is larger than {MAX_BODY} bytes (1 MiB)"}), 413

    @app.errorhandler(Exception)
    def unexpected(exc):
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return jsonify({"error": exc.description}), exc.code
        log("unexpected error", 40, error=type(exc).__name__)
        return jsonify({"error": "internal error; the delivery was not stored, Zoom will retry"}), 500
