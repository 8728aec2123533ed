"""Edge: `python -m reactor worker`, the Procfile's worker: a dispatcher with no web server (it never
imports Flask); with REACTOR_INGEST=off also the ingester, as web processes then only acknowledge
(it then needs the rules). Stops on SIGTERM or SIGINT, letting in-flight calls finish."""
from __future__ import annotations

import os
import signal
import sys
import threading

from .dispatch import Dispatcher
from .errors import ReactorError
from .housekeeping import start_housekeeping
from .ingest import Ingester
from .live_rules import ActiveRules, LiveAccounts
from .logs import configure_logging, log
from .settings import Settings
from .store import check_schema_at_start, open_store

INGEST_POLL = 0.05  # seconds between looks at the inbox when this worker is its only ingester


def run_worker() -> int:
    """Dispatch (and with REACTOR_INGEST=off ingest) until told to stop; exit code 3 when settings, the
    rules or accounts files or the database are not usable. Rules and accounts reload as in the web
    processes."""
    configure_logging()
    try:
        settings = Settings.from_env(webhooks=False)
        # the ingester needs the rules (and with them the accounts); the dispatcher only the accounts
        active = ActiveRules(settings) if settings.ingest == "off" else LiveAccounts(settings)
        store = open_store(settings.database_url)
        if away := check_schema_at_start(store):
            log("the database is unavailable at start-up; starting anyway, claiming nothing until it is back", 40,
                error=away)
    except ReactorError as exc:
        print(f"reactor worker cannot start: {exc}", file=sys.stderr)
        return 3
    dispatcher = Dispatcher(store, settings, lambda: active.accounts)
    # with REACTOR_INGEST=off no web process ingests: this worker takes every row at once
    ingester = Ingester(store, active, settings, dispatcher.wake, orphan_after=0.0, sweep_every=INGEST_POLL) \
        if settings.ingest == "off" else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    dispatcher.start()
    store.listen(dispatcher.wake)
    if ingester is not None:
        ingester.start()
    start_housekeeping(store.maintain, active.reload_if_changed)
    log("worker started", pid=os.getpid(), threads=dispatcher.threads, ingest=settings.ingest)
    stop.wait()
    if ingester is not None:
        ingester.stop()
    dispatcher.stop()
    return 0
