"""A bench baseline, never a way to run reactor: its web app exactly as served, except that appending
a delivery to the inbox stores nothing (and so nothing is ingested). Against it, `make bench` shows what
the durable commit costs, and against the bare Flask ceiling, what reactor's own request path
(signature, parsing, checks, answer) costs."""
import itertools
import threading

from reactor import create_app as create_reactor


class _Uncommitted:
    """The real store for everything except append(), which answers at once."""

    def __init__(self, store):
        self._store = store
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def append(self, body, dedup_key, account, received_at, order_key=None):
        with self._lock:
            return next(self._seq)

    def __getattr__(self, name):
        return getattr(self._store, name)


def create_app():
    app = create_reactor()
    reactor = app.extensions["reactor"]
    reactor.store = _Uncommitted(reactor.store)
    reactor.ingester = None
    return app
