"""A bench peer, never part of reactor: the least any receiver can do that keeps reactor's promise of an fsync
behind every 200, so that `make bench` shows how far below the ceiling that promise alone puts this stack.

The bare Flask endpoint of the ceiling, plus one thing: each request's body is appended to a file of its
process (length-prefixed) and the file is fdatasync'd before the answer. Requests arriving together share one
fdatasync (group commit: the first waiting leads, writes everything queued and syncs, then passes the lead on).
It checks nothing (no signature, no JSON), keeps no index and no second process's lock, and never reads the
file back: no design that stores a delivery durably before answering can do less per request. Served by
reactor's own gunicorn settings, as the ceiling is.

FLOOR_DIR: the folder for the files (the bench sets it; default: the working directory).
"""
from __future__ import annotations

import os
import threading

from flask import Flask, request


class _Appender:
    """Durable appends to one file, group-committed across this process's threads."""

    def __init__(self, path: str):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()   # guards the queue and the lead
        self._queue: list[_Pending] = []
        self._leading = False

    def append(self, data: bytes) -> None:
        mine = _Pending(data)
        with self._lock:
            self._queue.append(mine)
            if not self._leading:
                self._leading = mine.lead = True
        if not mine.lead:
            mine.wake.wait()  # our batch was synced, or the lead is ours
        if mine.done:
            return
        with self._lock:
            batch, self._queue = self._queue, []
        os.write(self._fd, b"".join(len(p.data).to_bytes(4, "little") + p.data for p in batch))
        os.fdatasync(self._fd)
        for pending in batch:
            pending.done = True
            pending.wake.set()
        with self._lock:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].wake.set()
            else:
                self._leading = False


class _Pending:
    __slots__ = ("data", "wake", "lead", "done")

    def __init__(self, data: bytes):
        self.data, self.wake, self.lead, self.done = data, threading.Event(), False, False


def create_app() -> Flask:
    folder = os.environ.get("FLOOR_DIR", ".")
    appender = _Appender(os.path.join(folder, f"floor-{os.getpid()}.log"))
    app = Flask(__name__)

    @app.post("/webhooks/zoom")
    def webhook():
        appender.append(request.get_data())
        return "", 204

    @app.get("/readyz")
    def ready():
        return "ok"

    return app
