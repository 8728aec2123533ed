"""A bench baseline, never a way to run reactor: its web app exactly as served, except that accepting
a delivery stores nothing. Against it, `make bench` shows what the durable commit costs, and against
the bare Flask ceiling, what reactor's own work (signature, parsing, rules, plan, log, answer) costs."""
from reactor import create_app as create_reactor
from reactor.store import Accepted


class _Uncommitted:
    """The real store for everything except accept(), which answers at once."""

    def __init__(self, store):
        self._store = store

    def accept(self, delivery, actions, deadline):
        return Accepted(0, False, ())

    def __getattr__(self, name):
        return getattr(self._store, name)


def create_app():
    app = create_reactor()
    reactor = app.extensions["reactor"]
    reactor.store = _Uncommitted(reactor.store)
    return app
