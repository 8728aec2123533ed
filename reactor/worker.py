"""Edge: `python -m reactor worker`, the Procfile's worker: a dispatcher process with no web server
(it never imports Flask). Stops on SIGTERM or SIGINT, letting in-flight calls finish."""
from __future__ import annotations

import os
import signal
import sys
import threading

from .dispatch import Dispatcher
from .errors import ReactorError
from .housekeeping import start_housekeeping
from .live_rules import LiveAccounts
from .logs import configure_logging, log
from .settings import Settings
from .store import open_store


def run_worker() -> int:
    """Dispatch until told to stop; exit code 3 when settings, the accounts file or the database are not
    usable. The accounts (whose credentials the calls use) reload as in the web processes."""
    configure_logging()
    try:
        settings = Settings.from_env(webhooks=False)
        active = LiveAccounts(settings)
        store = open_store(settings.database_url)
        store.check_schema()
    except ReactorError as exc:
        print(f"reactor worker cannot start: {exc}", file=sys.stderr)
        return 3
    dispatcher = Dispatcher(store, settings, lambda: active.accounts)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    dispatcher.start()
    store.listen(dispatcher.wake)
    start_housekeeping(store.maintain, dispatcher.upkeep, active.reload_if_changed)
    log("worker started", pid=os.getpid(), threads=dispatcher.threads)
    stop.wait()
    dispatcher.stop()
    return 0
