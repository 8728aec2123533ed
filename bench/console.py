"""The console on a big history: 1,000,000 deliveries (and their actions) in SQLite and in PostgreSQL, filled
with one INSERT ... SELECT each (not through the webhook), then each page rendered by the real app (Flask's
test client: the store's queries and the templates, without the network). Prints medians; target < 200 ms.

`python bench/console.py` alone, or `make bench` (its `console` section). BENCH_QUICK=1: 50,000 deliveries.
`python bench/console.py refresh-cpu SPAN COUNT...`: the CPU of one refresh of the console-load bench's
operator (see refresh_cpu), as JSON.
"""
from __future__ import annotations

import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reactor.settings import Settings  # noqa: E402
from reactor.store import open_store  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK") == "1"
COUNT = 50_000 if QUICK else 1_000_000
SPAN = 30 * 86400            # the deliveries are spread over 30 days (REACTOR_HISTORY_DAYS' default), newest now
MEETINGS = COUNT // 10       # ten deliveries per meeting
PASSWORD = "bench-console-password"
RUNS = 15
RULES = 'rules:\n  - name: Stream town halls\n    on: meeting.started\n    when: {topic: {glob: "Town Hall*"}}\n' \
        '    do: [livestream.start]\n'
BODY = ('{"event": "meeting.started", "event_ts": 1, "payload": {"account_id": "Wk9PTV9BQ0NPVU5UX0lE", "object": '
        '{"id": "MID", "uuid": "UUID", "host_id": "x1yCzABCDEfg23HiJKl4mN", "host_email": "host@example.com", '
        '"topic": "TOPIC", "type": 2, "start_time": "2026-11-26T17:00:05Z", "timezone": "UTC", "duration": 60}}}')
VERDICTS = '[{"rule": "Stream town halls", "matched": true, "why": ""}]'
ACTION = ('{"rule": "Stream town halls", "kind": "livestream.start", "method": "PATCH", "path": '
          '"/meetings/MID/livestream/status", "body": {"action": "start"}, "order_key": "meetings/MID", "account": ""}')


def _numbers(dialect: str) -> str:
    """A source of n = 1..COUNT (parameter: COUNT)."""
    if dialect == "postgresql":
        return "SELECT generate_series(1, ?) AS n"
    return "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) SELECT n FROM s"


def fill(store, dialect: str, now: float) -> float:
    """COUNT deliveries; every second one with one action (one in 500 of those dead with Zoom's 400, the rest
    done), each action with one attempt. Returns the seconds it took."""
    started = time.perf_counter()
    mid = f"CAST(80000000000 + n % {MEETINGS} AS TEXT)"
    at = f"(? - ({COUNT} - n) * {SPAN / COUNT!r})"
    body = f"replace(replace(replace(?, 'MID', {mid}), 'UUID', 'inst-' || CAST(n AS TEXT)), 'TOPIC', " \
           f"CASE WHEN n % 3 = 0 THEN 'Town Hall ' ELSE 'Weekly sync ' END || CAST(n AS TEXT))"
    def run(conn, sql: str, args: tuple = ()):
        return store.run(conn, sql.replace("%", "%%") if dialect == "postgresql" else sql, args)

    with store.transaction() as conn:
        run(conn, f"""INSERT INTO deliveries (id, dedup_key, event, event_ts, order_key, instance, received_at,
                                topic, body, verdicts)
            SELECT n, 'bench-' || CAST(n AS TEXT),
                   CASE WHEN n % 2 = 0 THEN 'meeting.started' WHEN n % 7 = 0 THEN 'meeting.participant_joined'
                        ELSE 'meeting.ended' END,
                   CAST({at} * 1000 AS BIGINT), 'meetings/' || {mid}, 'inst-' || CAST(n AS TEXT), {at},
                   CASE WHEN n % 3 = 0 THEN 'Town Hall ' ELSE 'Weekly sync ' END || CAST(n AS TEXT), {body}, ?
            FROM ({_numbers(dialect)}) AS s""", (now, now, BODY, VERDICTS, COUNT))
        run(conn, """INSERT INTO jobs (id, delivery_id, seq, rule, kind, action, order_key, account, instance,
                                event_ts, status, due_at, deadline, attempts, last_message, updated_at)
            SELECT d.id, d.id, 0, 'Stream town halls', 'livestream.start', replace(?, 'MID', substr(d.order_key, 10)),
                   d.order_key, '', d.instance, d.event_ts,
                   CASE WHEN d.id % 1000 = 0 THEN 'dead' ELSE 'done' END, d.received_at, d.received_at + 1800, 1,
                   CASE WHEN d.id % 1000 = 0 THEN 'Cannot start the live stream' ELSE '' END, d.received_at + 0.2
            FROM deliveries d WHERE d.id % 2 = 0""", (ACTION,))
        run(conn, """INSERT INTO attempts (id, job_id, at, outcome, http_status, zoom_code, message, duration_ms, sent)
            SELECT j.id, j.id, j.updated_at, CASE WHEN j.status = 'dead' THEN 'dead' ELSE 'done' END,
                   CASE WHEN j.status = 'dead' THEN 400 ELSE 204 END,
                   CASE WHEN j.status = 'dead' THEN 3000 ELSE NULL END, j.last_message, 120.0, '{}'
            FROM jobs j""")
        if dialect == "postgresql":
            for table in ("deliveries", "jobs", "attempts"):
                store.run(conn, f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    with store.reading() as conn:
        store.run(conn, "ANALYZE")
    return time.perf_counter() - started


def logged_in(url: str, tmp: Path):
    """reactor's app on `url` (dispatch off) and a test client logged in to its console."""
    from reactor.app import create_app

    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "rules.yaml").write_text(RULES)
    settings = Settings.from_env({"ZOOM_WEBHOOK_SECRET_TOKEN": "bench", "REACTOR_DRY_RUN": "1", "DATABASE_URL": url,
                                  "REACTOR_RULES": str(tmp / "rules"), "REACTOR_DISPATCH": "off", "REACTOR_INGEST": "off",
                                  "REACTOR_CONSOLE_PASSWORD": PASSWORD})
    app = create_app(settings)
    client = app.test_client()
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text).group(1)
    assert client.post("/console/login", data={"csrf": token, "password": PASSWORD}).status_code == 303
    return app, client


def measure(url: str, tmp: Path, now: float) -> dict[str, float]:
    """Median milliseconds per console page, rendered by the app on `url`."""
    app, client = logged_in(url, tmp)
    meeting = 80000000000 + (COUNT // 2) % MEETINGS
    pages = {"overview": "/console", "deliveries list": "/console/deliveries",
             "search by meeting id": f"/console/deliveries?q={meeting}",
             "delivery page": f"/console/deliveries/{COUNT // 2}",
             "meeting timeline": f"/console/meetings/{meeting}",
             "list, event filter, last 2 days": "/console/deliveries?event=meeting.participant_joined&since=2d",
             "search by topic text, found among the newest": "/console/deliveries?q=town+hall+99",
             "search by topic text, found nowhere (one page reads 100,000 topics)": "/console/deliveries?q=no+such+topic"}
    out = {}
    for name, path in pages.items():
        times = []
        for n in range(RUNS + 2):
            started = time.perf_counter()
            answer = client.get(path)
            spent = (time.perf_counter() - started) * 1000
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
            if n >= 2:
                times.append(spent)
        out[name] = statistics.median(times)
    app.extensions["reactor"].store.close()
    return out


def bench_console(tmp: Path, row=None) -> None:
    """The `console` section of make bench: one row per backend and page."""
    from tests.backends import migrated_postgres_schema, postgres_url

    row = row or (lambda name, value, target="": print(f"  {name}: {value}  {target}", flush=True))
    print(f"console on {COUNT:,} deliveries:", flush=True)
    now = time.time()
    targets = [("SQLite", f"sqlite:///{tmp / 'console-bench.db'}")]
    pg = postgres_url() and migrated_postgres_schema()
    targets.append(("PostgreSQL", pg))
    for backend, url in targets:
        if not url:
            row(f"console, {backend}", "not measured: no PostgreSQL at 127.0.0.1:5432", "< 200 ms")
            continue
        store = open_store(url)
        try:
            store.migrate()
            filled = fill(store, "postgresql" if url.startswith("postgresql") else "sqlite", now)
        finally:
            store.close()
        try:
            medians = measure(url, tmp / backend, now)
        finally:
            if backend == "PostgreSQL":
                from tests.backends import drop_schema

                drop_schema(url)
        for page, ms in medians.items():
            row(f"console {page}, {backend}, {COUNT:,} deliveries", f"median {ms:.1f} ms of {RUNS}"
                + (f" (filled in {filled:.0f} s)" if page == "overview" else ""), "" if "topic" in page else "< 200 ms")


def fill_recent(store, count: int, now: float, span: float) -> None:
    """`count` meeting.started deliveries received over the last `span` seconds, each with one pending action:
    the database of an ingest run (Zoom paced at 30 calls/s leaves nearly every action pending)."""
    at = f"(? - ({count} - n) * {span / count!r})"
    with store.transaction() as conn:
        store.run(conn, f"""INSERT INTO deliveries (id, dedup_key, event, event_ts, order_key, instance, received_at,
                                      topic, body, verdicts)
            SELECT n, 'bench-' || CAST(n AS TEXT), 'meeting.started', CAST({at} * 1000 AS BIGINT),
                   'meetings/' || CAST(80000000000 + n AS TEXT), 'inst-' || CAST(n AS TEXT), {at}, 'Town Hall bench',
                   ?, ? FROM ({_numbers("sqlite")}) AS s""", (now, now, BODY, VERDICTS, count))
        store.run(conn, """INSERT INTO jobs (id, delivery_id, seq, rule, kind, action, order_key, account, instance,
                                      event_ts, status, due_at, deadline, updated_at)
            SELECT d.id, d.id, 0, 'Stream town halls', 'livestream.start', replace(?, 'MID', substr(d.order_key, 10)),
                   d.order_key, '', d.instance, d.event_ts, 'pending', d.received_at, d.received_at + 1800,
                   d.received_at FROM deliveries d""", (ACTION,))


def refresh_cpu(tmp: Path, counts: list[int], span: float) -> dict:
    """CPU milliseconds (this process's, median of RUNS) of one console refresh as the console-load bench's
    operator makes it, on SQLite holding each of `counts` deliveries received in the last `span` seconds:
    the overview with its figures counted, the overview with them shared (counted < 2 s before), the
    deliveries list; and a refresh every second = list + the mean of both overviews (counted every 2 s)."""
    from reactor.console.reading import Shared

    out = {}
    for count in counts:
        url = f"sqlite:///{tmp / f'refresh-{count}.db'}"
        store = open_store(url)
        try:
            store.migrate()
            fill_recent(store, count, time.time(), span)
        finally:
            store.close()
        app, client = logged_in(url, tmp)

        def cpu(path: str, fresh: bool) -> float:
            times = []
            for n in range(RUNS + 2):
                if fresh:
                    app.extensions["console_figures"] = Shared()
                started = time.process_time()
                answer = client.get(path)
                spent = (time.process_time() - started) * 1000
                assert answer.status_code == 200, (path, answer.status_code)
                if n >= 2:
                    times.append(spent)
            return statistics.median(times)

        figures = {"overview counted": cpu("/console", True), "overview shared": cpu("/console", False),
                   "deliveries list": cpu("/console/deliveries", False)}
        figures["refresh"] = figures["deliveries list"] + (figures["overview counted"] + figures["overview shared"]) / 2
        out[count] = figures
        app.extensions["reactor"].store.close()
    return out


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="reactor-console-bench-") as folder:
        if sys.argv[1:2] == ["refresh-cpu"]:  # refresh-cpu SPAN COUNT...: JSON, for bench/run.py console-load
            print(json.dumps(refresh_cpu(Path(folder), [int(c) for c in sys.argv[3:]], float(sys.argv[2]))))
        else:
            Path(folder, "SQLite").mkdir()
            Path(folder, "PostgreSQL").mkdir()
            bench_console(Path(folder))
