"""`make bench`: reactor's figures against baselines measured in the same run. Prints one table.

Machines here are noisy: compare the ratios and medians, not single numbers across runs.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from reactor.events import event_from_body  # noqa: E402
from reactor.rules.load import load_rules  # noqa: E402
from tests.backends import migrated_postgres_schema, postgres_url  # noqa: E402
from tests.conftest import SECRET, ReactorServer, event, signed_headers  # noqa: E402
from tests.zoom_standin import Reply, ZoomStandIn  # noqa: E402

PLAIN = 'rules:\n  - name: Plain\n    on: meeting.started\n    when: {topic: {glob: "Plain*"}}\n    do: [livestream.start]\n'
TOWN_HALL = PLAIN.replace("Plain*", "Town Hall*")  # matches the topic of every delivery ingest and CPU send
ROWS: list[tuple[str, str, str]] = []
QUICK = os.environ.get("BENCH_QUICK") == "1"


def row(name: str, value: str, target: str = "") -> None:
    ROWS.append((name, value, target))
    print(f"  {name}: {value}", flush=True)


def many_rules(count: int, globs: int = 100) -> str:
    """`count` rules keyed by meeting id or host, plus `globs` glob rules."""
    lines = ["rules:"]
    for n in range(count - globs):
        key = f"id: {90_000_000_000 + n}" if n % 2 else f"host_id: host-{n}"
        lines += [f"  - name: keyed {n}", "    on: meeting.started", f"    when: {{{key}}}", "    do: [livestream.start]"]
    for n in range(globs):
        lines += [f"  - name: glob {n}", "    on: meeting.started", f"    when: {{topic: {{glob: 'Series {n} *'}}}}",
                  "    do: [livestream.start]"]
    return "\n".join(lines) + "\n"


def worker_rss_mb(master_pid: int) -> list[float]:
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    out = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out.append(int(line.split()[1]) / 1024)
    return out


# -- 1. ingest against the bare Flask ceiling, and 10,000 rules against 1 ------------------------------


def bench_ingest(tmp: Path) -> None:
    """Bare Flask, reactor with 1 rule, with 10,000 rules and without its commit, in turns; medians of the rounds."""
    rounds = 1 if QUICK else 3
    seconds = 5 if QUICK else 8
    print(f"ingest (wrk, 32 connections, 2 threads, {rounds} rounds of {seconds} s each, medians):", flush=True)
    script = wrk.write_script(tmp / "deliveries.lua", SECRET, 30_000)
    env = {"WEB_CONCURRENCY": None}  # as the Procfile starts it: gunicorn_conf's default
    zoom = ZoomStandIn()  # real credentials and calls, paced at the default 30/s, as in production
    # the same matching rule, plus 9,999 that the index must rule out: the same actions either way
    big_rules = many_rules(10_000 - 1) + TOWN_HALL.split("rules:\n", 1)[1]
    targets = {"ceiling": (None, "bench.bare_app:create_app()"), "1 rule": (TOWN_HALL, "reactor:create_app()"),
               "10,000 rules": (big_rules, "reactor:create_app()"),
               "no commit": (TOWN_HALL, "bench.uncommitted_app:create_app()")}
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    for n in range(rounds):
        for name, (rules, app) in targets.items():
            server = ReactorServer(tmp / f"ingest-{n}-{len(name)}", rules, env, zoom, app=app)
            started = time.time()
            server.start()
            startup = time.time() - started
            result = wrk.run(server.url, script, seconds)
            result["startup"] = startup
            result["rss"] = max(worker_rss_mb(server.proc.pid))
            server.stop()
            runs[name].append(result)
    zoom.close()
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "startup", "rss")}
           for name, rs in runs.items()}
    non2xx = {name: sum(r["non2xx"] + r["socket_errors"] for r in rs) for name, rs in runs.items()}
    ceiling, one, big, uncommitted = med["ceiling"], med["1 rule"], med["10,000 rules"], med["no commit"]
    row("bare Flask 204 (ceiling)", f"{ceiling['rps']:.0f} req/s, p50 {ceiling['p50']:.1f} ms, p99 {ceiling['p99']:.1f} ms")
    row("reactor's path without its commit (baseline)", f"{uncommitted['rps']:.0f} req/s = "
        f"{uncommitted['rps'] / ceiling['rps']:.2f}x ceiling, p50 {uncommitted['p50']:.1f} ms, p99 {uncommitted['p99']:.1f} ms")
    row("reactor ingest, 1 rule", f"{one['rps']:.0f} req/s = {one['rps'] / ceiling['rps']:.2f}x ceiling "
        f"({one['rps'] / uncommitted['rps']:.2f}x without the commit), p50 {one['p50']:.1f} ms, p99 {one['p99']:.1f} ms, "
        f"non-2xx {non2xx['1 rule']}", ">= 0.8x, p99 <= 25 ms, 0 non-2xx")
    row("reactor ingest, 10,000 rules", f"{big['rps']:.0f} req/s = {big['rps'] / one['rps']:.2f}x of 1 rule, p99 "
        f"{big['p99']:.1f} ms, non-2xx {non2xx['10,000 rules']}", ">= 0.9x of 1 rule")
    row("start-up to ready, 10,000 rules", f"{big['startup']:.2f} s (1 rule: {one['startup']:.2f} s)", "<= 5 s")
    row("RSS per web worker after ingest", f"{one['rss']:.0f} MB (1 rule), {big['rss']:.0f} MB (10,000 rules)",
        "<= 80 MB")
    if postgres_url():
        url = migrated_postgres_schema()
        zoom = ZoomStandIn()
        server = ReactorServer(tmp / "ingest-pg", TOWN_HALL, {**env, "DATABASE_URL": url}, zoom).start()
        try:
            pg = wrk.run(server.url, script, seconds)
        finally:
            server.stop()
            zoom.close()
        row("reactor ingest, 1 rule, PostgreSQL", f"{pg['rps']:.0f} req/s = {pg['rps'] / ceiling['rps']:.2f}x ceiling, "
            f"p50 {pg['p50']:.1f} ms, p99 {pg['p99']:.1f} ms, non-2xx {pg['non2xx']} (one round)")


def bench_cpu(tmp: Path) -> None:
    """CPU per webhook in one thread, each WSGI app called directly: where the ingest gap comes from."""
    print("CPU per webhook (one thread, WSGI called directly, no gunicorn):", flush=True)
    rules = tmp / "cpu-rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(TOWN_HALL)
    env = {"PATH": os.environ.get("PATH", ""), "ZOOM_WEBHOOK_SECRET_TOKEN": SECRET, "REACTOR_RULES": str(rules),
           "DATABASE_URL": f"sqlite:///{tmp / 'cpu.db'}", "REACTOR_DRY_RUN": "1", "REACTOR_DISPATCH": "off",
           "BENCH_QUICK": "1" if QUICK else "0"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu.py")], env=env, capture_output=True, text=True,
                         timeout=300)
    if out.returncode:
        raise SystemExit(f"bench/cpu.py failed:\n{out.stderr}")
    us = json.loads(out.stdout.strip().splitlines()[-1])
    row("CPU per webhook, one thread, WSGI called directly", f"bare Flask {us['bare']:.0f} µs; reactor without its commit "
        f"{us['uncommitted']:.0f} µs ({us['uncommitted'] / us['bare']:.1f}x); reactor {us['reactor']:.0f} µs "
        f"({us['reactor'] / us['bare']:.1f}x, one commit and fsync each)")


# -- 2. reaction: webhook to Zoom call -------------------------------------------------------------------


def bench_reaction(tmp: Path) -> None:
    print("reaction (post -> Zoom stand-in receives the PATCH):", flush=True)
    backends = [("SQLite", None)]
    if postgres_url():
        backends.append(("PostgreSQL", "pg"))
    for label, db in backends:
        for rate, seconds in ((10, 5), (200, 3)):
            zoom = ZoomStandIn()
            env = {"REACTOR_ZOOM_RATE": "1000"}
            if db:
                env["DATABASE_URL"] = migrated_postgres_schema()
            server = ReactorServer(tmp / f"react-{label}-{rate}", PLAIN, env, zoom).start()
            try:
                sent = {}
                session = requests.Session()
                count = rate * seconds
                t0 = time.time()
                for n in range(count):
                    due = t0 + n / rate
                    if due > time.time():
                        time.sleep(due - time.time())
                    mid = str(70_000_000_000 + n)
                    raw = json.dumps(event(meeting_id=mid, topic="Plain")).encode()
                    sent[mid] = time.time()
                    session.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw), timeout=10)
                zoom.wait_for(count, timeout=60)
                lat = sorted((c.at - sent[c.path.split("/")[3]]) * 1000 for c in zoom.api_calls())
                p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99) - 1]
                target = "p50 <= 10 ms, p99 <= 50 ms" if (label, rate) == ("SQLite", 10) else ""
                row(f"reaction {label} at {rate}/s", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({count} events)", target)
            finally:
                server.stop()
                zoom.close()


# -- 3. the rule engine alone ---------------------------------------------------------------------------


def bench_rules(tmp: Path) -> None:
    print("rule engine (in process):", flush=True)
    for count in (10, 1_000, 10_000):
        path = tmp / f"rules-{count}.yaml"
        path.write_text(many_rules(count, globs=min(100, count // 2)))
        started = time.perf_counter()
        rules = load_rules(path)
        load_s = time.perf_counter() - started
        bodies = [event(meeting_id=str(90_000_000_000 + n), host_id=f"host-{n}", topic=f"Series {n % 150} x")
                  for n in range(2_000)]
        events = [event_from_body(b, json.dumps(b).encode()) for b in bodies]
        started = time.perf_counter()
        matched = sum(len(rules.matching(e)) for e in events)
        rate = len(events) / (time.perf_counter() - started)
        row(f"engine, {count:,} rules", f"{rate:,.0f} events/s, load {load_s:.2f} s ({matched} matches)")


# -- 4. burst drain and 5. memory -----------------------------------------------------------------------


def bench_burst(tmp: Path) -> None:
    total, rate = (1000, 80) if QUICK else (5000, 80)
    print(f"burst drain ({total} meeting.started in ~10 s, pacing {rate}/s, Zoom limiting at {rate}/s):", flush=True)
    zoom = ZoomStandIn()
    window: list[float] = []
    lock = threading.Lock()

    def zoom_limit(call):  # Zoom's limiter, as seen from outside: more than `rate` in the last second -> 429
        with lock:
            while window and window[0] < call.at - 1.0:
                window.pop(0)
            if len(window) >= rate:
                return Reply(429, {"code": 429, "message": "Too many requests"}, {"Retry-After": "1"})
            window.append(call.at)
        return None

    zoom.chaos = zoom_limit
    server = ReactorServer(tmp / "burst", PLAIN, {"REACTOR_ZOOM_RATE": str(rate), "WEB_CONCURRENCY": None}, zoom).start()
    try:
        idle = worker_rss_mb(server.proc.pid)
        ids = [str(60_000_000_000 + n) for n in range(total)]
        t0 = time.time()

        def post_all(part):
            session = requests.Session()
            for mid in part:
                due = t0 + (int(mid) - 60_000_000_000) * 10.0 / total
                if due > time.time():
                    time.sleep(due - time.time())
                raw = json.dumps(event(meeting_id=mid, topic="Plain")).encode()
                while session.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw),
                                   timeout=10).status_code != 200:
                    time.sleep(0.1)

        posters = [threading.Thread(target=post_all, args=(ids[k::4],)) for k in range(4)]
        [p.start() for p in posters]
        [p.join() for p in posters]
        posted = time.time() - t0
        deadline = time.time() + total / rate * 2 + 60
        while time.time() < deadline and len(zoom.succeeded()) < total:
            time.sleep(0.5)
        time.sleep(2.0)  # anything doubled would arrive now
        good = zoom.succeeded()
        drained = max(c.at for c in good) - t0
        counts = Counter(c.path for c in good)
        limited = sum(1 for c in zoom.api_calls() if c.status == 429)
        floor = total / rate
        row(f"burst drain {total} at {rate}/s", f"{drained:.1f} s (floor {floor:.1f} s, {drained / floor:.2f}x; posted in "
            f"{posted:.1f} s), 429s {limited}, lost {total - len(counts)}, doubled "
            f"{sum(1 for v in counts.values() if v > 1)}", "<= 1.10x floor, 0 lost, 0 doubled")
        row("RSS per web worker, idle -> after burst", f"{max(idle):.0f} MB -> {max(worker_rss_mb(server.proc.pid)):.0f} MB",
            "<= 80 MB")
    finally:
        server.stop()
        zoom.close()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="reactor-bench-") as folder:
        tmp = Path(folder)
        only = set(sys.argv[1:]) or {"rules", "cpu", "ingest", "reaction", "burst"}
        for name, fn in (("rules", bench_rules), ("cpu", bench_cpu), ("ingest", bench_ingest),
                         ("reaction", bench_reaction), ("burst", bench_burst)):
            if name in only:
                fn(tmp)
    width = max(len(r[0]) for r in ROWS)
    print("\n| measure | result | target |\n|---|---|---|")
    for name, value, target in ROWS:
        print(f"| {name:<{width}} | {value} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
