"""gunicorn settings for `gunicorn -c python:reactor.gunicorn_conf 'reactor:create_app()'`.

The app is created in each worker after fork (no preload), so no database connection or thread
crosses a fork. The master validates settings and rules first, so a bad configuration stops
start-up with one clear message, and SIGHUP re-validates them (see reactor.live_rules).
"""
import multiprocessing
import os
import sys

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# One process per core, threads for the waiting (database commits): fewer processes means bigger group
# commits on SQLite and fewer PostgreSQL connections; measured in bench/ (2x8 beat 4x4 by ~20% here). 16 threads:
# more requests wait on one commit, so fewer commits (SQLite 1 rule: +17% webhooks a second against 8, three
# alternating rounds; README, Performance).
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("REACTOR_WEB_THREADS", "16"))
worker_class = "gthread"
preload_app = False
timeout = 30                 # a worker silent this long is restarted
graceful_timeout = 20        # below the PaaS's 30 s kill timeout (Heroku: SIGTERM then 30 s then SIGKILL)
DISPATCH_STOP = 8            # s worker_exit waits for the calls in flight, then INGEST_STOP for the ingest: in
INGEST_STOP = 10             # graceful_timeout together (a worker with no request left gets there at once)
keepalive = 5
accesslog = None             # reactor logs one JSON line per delivery itself
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "warning")
# Who may tell reactor the client's address and scheme (X-Forwarded-For, X-Forwarded-Proto): the proxy in front,
# and no one else. Default: a proxy on this machine (gunicorn's own default). compose.yaml sets "*": there gunicorn
# has no published port and only the caddy container reaches it. Never "*" on a port the public can reach.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


_own_metrics_dir: str | None = None  # the metrics folder reactor chose (PROMETHEUS_MULTIPROC_DIR was unset)


def on_starting(server):
    global _own_metrics_dir
    if server.cfg.preload_app:  # --preload, or in GUNICORN_CMD_ARGS: the app would be made once, in the master
        sys.stderr.write("reactor cannot start with --preload: each worker makes its own app after the fork (its "
                         "ingester, dispatcher and database connections are threads and sockets a fork does not "
                         "carry): drop --preload (and preload_app) from the command and GUNICORN_CMD_ARGS\n")
        sys.stderr.flush()
        os._exit(3)
    if os.environ.get("REACTOR_METRICS", "1").strip().lower() not in ("0", "false", "no"):
        from reactor.metrics import ENV, clean, multiproc_dir

        chosen = not os.environ.get(ENV, "").strip()
        folder = multiproc_dir()
        clean(folder)  # before any worker counts: a restart starts from zero, never from old files
        _own_metrics_dir = folder if chosen else None
    from reactor.live_rules import validate
    from reactor.errors import ReactorError
    from reactor.settings import Settings
    from reactor.store import check_schema_at_start, open_store

    try:
        settings = Settings.from_env()
        rules = validate(settings)
        store = open_store(settings.database_url)
        away = check_schema_at_start(store)  # SQLite migrates itself; PostgreSQL must have been migrated
        if away:
            sys.stderr.write(f"reactor: the database is unavailable at start-up ({away}); starting anyway: webhooks "
                             f"answer 503 (Zoom retries them) until it is back\n")
        store.close()  # no connection crosses the fork
    except ReactorError as exc:
        sys.stderr.write(f"reactor cannot start: {exc}\n")
        sys.stderr.flush()
        os._exit(3)
    for warning in rules.warnings:
        sys.stderr.write(f"reactor rules warning: {warning}\n")
    import gc

    gc.freeze()  # the validated rules are inherited by every worker: no GC pass touches (and copies) them


def on_reload(server):
    from reactor.live_rules import revalidate
    from reactor.settings import Settings

    problems = revalidate(Settings.from_env())
    if problems:
        server.log.error("reactor: the new rules are invalid; workers keep the previous rules:\n  %s",
                         "\n  ".join(problems))
    else:
        server.log.warning("reactor: rules re-validated; restarting workers with them")


WSGI_PEER = "REMOTE_ADDR"  # the address of the connection's other end, in a request's WSGI environ


def post_worker_init(worker):
    """gunicorn believes X-Forwarded-Proto only from forwarded_allow_ips; make X-Forwarded-For obey the same list."""
    worker.reactor_app = worker.wsgi
    worker.wsgi = from_trusted_proxy(worker.wsgi, worker.cfg.forwarded_allow_ips)


def worker_exit(server, worker):
    """A worker stopping (a deploy, a scale-down), within graceful_timeout: its dispatcher claims nothing more
    and lets the calls in flight finish and be recorded (up to DISPATCH_STOP s; a call cut off keeps its
    lease, and another process makes it again once this one is silent), then its ingester stores what it
    acknowledged, so a graceful stop leaves nothing to another process's sweep of the inbox."""
    app = getattr(worker, "reactor_app", None)
    reactor = app.extensions.get("reactor") if app is not None else None
    if reactor is None:
        return
    if reactor.dispatcher is not None:
        reactor.dispatcher.stop(DISPATCH_STOP)
    if reactor.ingester is not None:
        reactor.ingester.stop(INGEST_STOP)


def from_trusted_proxy(app, allowed: list[str]):
    """`app` seeing the client's address and scheme as the proxy gives them (werkzeug's ProxyFix, one proxy: the
    last X-Forwarded-For and -Proto), for requests whose peer is in `allowed`; any other request, as it came."""
    import functools
    import ipaddress

    from werkzeug.middleware.proxy_fix import ProxyFix

    fixed = ProxyFix(app, x_for=1, x_proto=1)
    networks = [ipaddress.ip_network(a.strip(), strict=False) for a in allowed if a.strip() not in ("", "*")]

    @functools.lru_cache(maxsize=256)
    def trusted(peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False  # not an IP address (a UNIX socket): nothing says who is on the other end
        return "*" in allowed or any(address in network for network in networks)

    def wsgi(environ, start_response):
        return (fixed if trusted(environ.get(WSGI_PEER, "")) else app)(environ, start_response)

    return wsgi


def on_exit(server):
    """reactor's own metrics folder goes with the server (counts start from zero at the next start anyway)."""
    if _own_metrics_dir:
        import shutil

        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    """A worker exited: its live gauges stop counting (its counters stay, as Prometheus expects)."""
    from reactor.metrics import worker_exited

    worker_exited(worker.pid)
