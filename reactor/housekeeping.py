"""Edge: one thread per process running upkeep every few seconds (rule reloads, the store's upkeep)."""
from __future__ import annotations

import threading
import time
from typing import Callable

from .logs import log


def start_housekeeping(*tasks: Callable[[], None], every: float = 2.0) -> None:
    """Run each of `tasks` every `every` seconds, in one daemon thread that never dies of an error."""

    def loop():
        while True:
            time.sleep(every)
            for task in tasks:
                try:
                    task()
                except Exception as exc:  # housekeeping must never die
                    log("housekeeping error", 40, task=task.__name__, error=repr(exc))

    threading.Thread(target=loop, name="reactor-housekeeping", daemon=True).start()
