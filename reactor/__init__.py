"""reactor: Zoom webhooks in, live-stream actions out.

`reactor.create_app` is imported lazily so that `python -m reactor send|check|explain` work
without the web stack loaded.
"""


def __getattr__(name):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)


__all__ = ["create_app"]
