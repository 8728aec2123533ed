"""CPU per webhook in one thread, calling each WSGI app directly (no gunicorn, no other load):
bare Flask, reactor's path without its commit, and reactor (one commit, one fsync, per delivery),
in alternating rounds.

Run by bench/run.py in its own process with reactor's settings in the environment; prints JSON.
"""
from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import event, signed_headers  # noqa: E402

# the apps take turns; the median round of each is reported
ROUNDS, COUNT = (3, 100) if os.environ.get("BENCH_QUICK") == "1" else (7, 500)


def environ(secret: str, n: int) -> dict:
    """The WSGI environ of one signed meeting.started delivery for meeting n."""
    body = json.dumps(event(meeting_id=str(80_000_000_000 + n))).encode()
    headers = signed_headers(body, secret)
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/zoom", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "CONTENT_TYPE": headers["content-type"], "CONTENT_LENGTH": str(len(body)),
            "HTTP_X_ZM_REQUEST_TIMESTAMP": headers["x-zm-request-timestamp"],
            "HTTP_X_ZM_SIGNATURE": headers["x-zm-signature"]}


def cpu_per_request(app, secret: str, first: int) -> float:
    """Microseconds of this process's CPU per request, over COUNT distinct signed deliveries."""
    statuses = []
    envs = [environ(secret, first + n) for n in range(COUNT)]
    started = time.process_time()
    for env in envs:
        b"".join(app(env, lambda status, headers, exc_info=None: statuses.append(status)))
    spent = time.process_time() - started
    assert all(s.startswith(("200", "204")) for s in statuses), set(statuses)
    return spent / COUNT * 1e6


def main() -> None:
    from bench.bare_app import create_app as bare
    from bench.uncommitted_app import create_app as uncommitted
    from reactor import create_app as reactor
    from reactor.logs import configure_logging

    secret = os.environ["ZOOM_WEBHOOK_SECRET_TOKEN"]
    apps = {"bare": bare(), "uncommitted": uncommitted(), "reactor": reactor()}
    configure_logging(stream=open(os.devnull, "w"))  # the log lines are still made, just not shown
    rounds: dict[str, list[float]] = {name: [] for name in apps}
    first = 0
    for _ in range(ROUNDS):
        for name, app in apps.items():
            rounds[name].append(cpu_per_request(app, secret, first))
            first += COUNT
    print(json.dumps({name: statistics.median(values) for name, values in rounds.items()}))


if __name__ == "__main__":
    main()
