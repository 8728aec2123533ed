"""`make bench`: reactor's figures against baselines measured in the same run. Prints one table.

Machines here are noisy: compare the ratios and medians, not single numbers across runs.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from reactor.events import event_from_body  # noqa: E402
from reactor.rules.load import load_rules  # noqa: E402
from reactor.rules.match import encode_verdicts  # noqa: E402
from tests.backends import drop_schema, migrated_postgres_schema, postgres_url  # noqa: E402
from tests.conftest import SECRET, ReactorServer, event, signed_headers  # noqa: E402
from tests.zoom_standin import Reply, ZoomStandIn  # noqa: E402

PLAIN = 'rules:\n  - name: Plain\n    on: meeting.started\n    when: {topic: {glob: "Plain*"}}\n    do: [livestream.start]\n'
TOWN_HALL = PLAIN.replace("Plain*", "Town Hall*")  # matches the topic of every delivery ingest and CPU send
ROWS: list[tuple[str, str, str]] = []
QUICK = os.environ.get("BENCH_QUICK") == "1"


def row(name: str, value: str, target: str = "") -> None:
    """A row of the table. A value starting with REFUSED carries no figure, only why (see refusal())."""
    ROWS.append((name, value, target))
    if value.startswith("REFUSED"):
        print(f"  ROW REFUSED, no figures printed: {name}: {value.removeprefix('REFUSED: ')}", flush=True)
    else:
        print(f"  {name}: {value}", flush=True)


def nearest_rank(values: list[float], percent: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `percent` % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


P99_SAMPLES = 200  # fewer samples than this and a p99 is one of the two slowest: not reported


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


def start(server: ReactorServer) -> ReactorServer:
    """Start `server` and wait for it to be ready (10,000 rules take a while on a loaded machine); a server
    that does not become ready is stopped before the error goes up, so no gunicorn is left behind."""
    server.start(wait=False)
    try:
        server.wait_ready(timeout=120)
    except BaseException:
        server.stop()
        raise
    return server


def worker_rss_mb(master_pid: int) -> list[float]:
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    out = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out.append(int(line.split()[1]) / 1024)
    return out


def cpu_seconds(master_pid: int) -> float:
    """CPU seconds (user + system) used so far by gunicorn's master and its live workers."""
    pids = [str(master_pid)] + subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True,
                                              text=True).stdout.split()
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


# -- 1. ingest against the bare Flask ceiling and the peers, and 10,000 rules against 1 --------------------

INGEST = ("Node sample", "durable floor", "careful Flask", "no commit", "acknowledge only", "1 rule", "10,000 rules",
          "PostgreSQL")  # rotated each round
# store every delivery, and so a run that repeats deliveries is refused (reactor answers a repeat as a cheap
# duplicate); not the durable floor, which reads no body: a repeat costs it what any delivery does
STORES = ("careful Flask", "acknowledge only", "1 rule", "10,000 rules", "PostgreSQL")
REACTOR_STORES = ("1 rule", "10,000 rules", "PostgreSQL")  # reactor with its own store: its backlog is waited for
DISTINCT = 45_000  # deliveries per run, each signed just before its run (30,000 ran out: 3,747 2xx/s for 8 s)
DRAIN_LIMIT = 120.0  # seconds after wrk's end to wait for the store's backlog to drain
NODE_SAMPLE = ROOT / "bench" / "peers" / "zoom-sample-node"
NAMES = {  # the peers' rows
    "Node sample": "Zoom's Node.js webhook sample (Express: verify, log, store nothing; one process)",
    "careful Flask": "a careful user's Flask app (verify, one SQLite insert per request, synchronous=FULL)",
    "durable floor": "the durable floor: the ceiling's endpoint plus each body appended to a file and fdatasync'd "
                     "before the answer (group commit; nothing checked, nothing else stored)",
}


def crowded_rules(count: int = 10_000, hosts: int = 250, globs: int = 100, shared: int = 20) -> str:
    """`count` rules of which only the last (TOWN_HALL's) matches a bench delivery, laid out so that each
    delivery lands in populated index buckets and meets candidates that must be evaluated: its host's rules
    (host-0 .. host-49 of `hosts`, about count/2/hosts each), `shared` of the `globs` globs sharing the
    literal prefix 'Town Hall' (the others start 'Series n'), and for one delivery in six its own meeting's
    rule. Each candidate fails on a check the index does not make."""
    keyed = count - 1 - globs
    lines = ["rules:"]
    for n in range(keyed):
        when = (f"{{host_id: host-{(n // 2) % hosts}, duration: {{gt: 240}}}}" if n % 2 == 0
                else f"{{id: {80_000_000_000 + 6 * (n // 2)}, topic: {{glob: 'Board*'}}}}")
        lines += [f"  - name: keyed {n}", "    on: meeting.started", f"    when: {when}", "    do: [livestream.start]"]
    for n in range(globs):
        glob = f"Town Hall*Series {n}" if n < shared else f"Series {n} *"
        lines += [f"  - name: glob {n}", "    on: meeting.started", f"    when: {{topic: {{glob: '{glob}'}}}}",
                  "    do: [livestream.start]"]
    return "\n".join(lines) + "\n" + TOWN_HALL.split("rules:\n", 1)[1]


def candidate_counts(tmp: Path, rules: str, bodies: list[bytes]) -> tuple[list[int], int]:
    """How many candidate rules the index hands over for each body (RuleSet.candidates), and how many rules
    match in all over the first 300 bodies (evaluating is the slow part)."""
    folder = tmp / f"candidates-{len(rules)}"
    folder.mkdir(exist_ok=True)
    (folder / "rules.yaml").write_text(rules)
    ruleset = load_rules(folder)
    events = [event_from_body(json.loads(body), body) for body in bodies]
    return [len(ruleset.candidates(e)) for e in events], sum(len(ruleset.matching(e)) for e in events[:300])


@dataclass(frozen=True)
class Run:
    """One wrk run of one target, in the order the runs happened."""

    name: str  # "ceiling" or one of INGEST
    result: wrk.Result
    startup: float = 0.0
    rss: float = 0.0
    drained: float | None = None  # s from wrk's end to an empty inbox backlog (inf: not within DRAIN_LIMIT); None: none kept
    cpu_us: float = 0.0  # CPU (user + system) of the server's processes during the run, per 2xx answer


class NodeSample(ReactorServer):
    """Zoom's Node.js webhook sample as bench/peers/zoom-sample-node writes it, started, awaited and stopped
    like reactor (its own free port, /readyz, its output in the run's folder)."""

    def __init__(self, tmp: Path, env: dict | None = None):
        super().__init__(tmp, env=env, app=str(NODE_SAMPLE / "app.js"))

    def start(self, wait: bool = True) -> "NodeSample":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["node", self.app], cwd=self.tmp, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready()
        return self


def prepare_node_sample() -> str | None:
    """Why the Node sample cannot run here, or None once its pinned packages are installed (`npm ci`, once)."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "not measured: node/npm missing (install Node.js with npm)"
    if not (NODE_SAMPLE / "node_modules").is_dir():
        out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_SAMPLE, capture_output=True,
                             text=True, timeout=600)
        if out.returncode:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            return f"not measured: `npm ci` failed in bench/peers/zoom-sample-node ({last})"
    return None


def backlog_drained(server: ReactorServer, since: float) -> float | None:
    """Seconds from `since` (wrk's end) until the store's inbox backlog (deliveries acknowledged but not yet
    turned into deliveries and jobs) is 0: math.inf if not within DRAIN_LIMIT, None for a store keeping none."""
    store = server.store()
    try:
        if not hasattr(store, "inbox_backlog"):
            return None
        while store.inbox_backlog() > 0:
            if time.time() - since > DRAIN_LIMIT:
                return math.inf
            time.sleep(0.05)
        return time.time() - since
    finally:
        store.close()


def refusal(runs: list[Run], stores: bool) -> str | None:
    """Why these runs' figures must not be printed: any answer but a 2xx, any request never answered, or
    (for a target that stores) more requests than distinct deliveries, whose repeats are cheap duplicates."""
    bad: Counter = Counter()
    for run in runs:
        bad.update(run.result.not_ok)
    if bad:
        what = ", ".join(f"{status}: {count}" for status, count in sorted(bad.items()))
        return (f"{sum(bad.values())} requests not answered with a 2xx over {len(runs)} runs ({what}); "
                f"2xx/s would not be what was measured")
    repeated = [run.result.answered for run in runs if stores and run.result.answered > DISTINCT]
    if repeated:
        return f"a run sent {max(repeated)} deliveries, more than the {DISTINCT} distinct ones: repeats are duplicates"
    return None


def _nearest_ceilings(runs: list[Run], at: int) -> float:
    """The mean 2xx/s of the ceiling runs just before and just after run `at` (one of them at the ends)."""
    before = next((r for r in reversed(runs[:at]) if r.name == "ceiling"), None)
    after = next((r for r in runs[at + 1:] if r.name == "ceiling"), None)
    near = [r.result.ok_per_second for r in (before, after) if r is not None]
    return statistics.mean(near)


def _spread(values: list[float]) -> str:
    """'0.27x' for one value; '0.27x (0.25-0.29 over 4 rounds)', the median and range, for more."""
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f} over {len(values)} rounds)"


def ingest_rows(runs: list[Run], candidates: list[int], unmeasured: dict[str, str]) -> list[tuple[str, str, str]]:
    """The ingest rows, always the same rows in the same order; a row whose runs (or whose baseline's runs)
    had any answer but a 2xx says so instead of its figures. `unmeasured`: target -> why it was not run."""
    by = {name: [r for r in runs if r.name == name] for name in ("ceiling", *INGEST)}
    why = {name: refusal(rs, stores=name in STORES) for name, rs in by.items()}

    def med(name: str, key: str) -> float:
        if key in ("startup", "rss"):
            return statistics.median(getattr(r, key) for r in by[name])
        if key == "rps":
            return statistics.median(r.result.ok_per_second for r in by[name])
        return statistics.median(getattr(r.result, key) for r in by[name])

    def to_ceiling(name: str) -> list[float]:
        return [r.result.ok_per_second / _nearest_ceilings(runs, k) for k, r in enumerate(runs) if r.name == name]

    def same_round(name: str, base: str) -> list[float]:
        return [a.result.ok_per_second / b.result.ok_per_second for a, b in zip(by[name], by[base])]

    def latency(name: str) -> str:
        return f"p50 {med(name, 'p50'):.1f} ms, p99 {med(name, 'p99'):.1f} ms"

    def drained(name: str) -> str:
        """How long the store's backlog took to drain after the runs; nothing for a store that keeps none."""
        times = [r.drained for r in by[name] if r.drained is not None]
        if not times:
            return ""
        late = sum(t == math.inf for t in times)
        if late:
            return f"; backlog not drained within {DRAIN_LIMIT:.0f} s after {late} of {len(times)} runs"
        return f"; backlog drained {statistics.median(times):.1f} s after the run (median, max {max(times):.1f} s)"

    def figures(name: str, depends: tuple, text) -> str:
        if name in unmeasured:
            return unmeasured[name]
        for dep in (name, *depends):
            if why[dep]:
                return f"REFUSED: {why[dep]}" if dep == name else f"REFUSED: its baseline ({dep}) was refused"
        return text()

    def against_ceiling(name: str) -> str:
        return (f"{med(name, 'rps'):,.0f} 2xx/s = {_spread(to_ceiling(name))} of the ceiling runs next to it, "
                f"{latency(name)}")

    def against_peer(peer: str, label: str, bold: bool = False, name: str = "1 rule") -> str:
        """reactor's `name` to a peer, same rounds. A peer's refusal (a slow request of its own timing out)
        leaves reactor's own figures standing: the ratio alone is left out, saying why."""
        if peer in unmeasured or why[peer]:
            return f"no ratio to {label} ({'not measured' if peer in unmeasured else 'its row was refused'})"
        ratio = _spread(same_round(name, peer))
        return f"{'**' + ratio + '**' if bold else ratio} of {label}"

    rows = []
    n_ceiling = len(by["ceiling"])
    rows.append(("bare Flask 204 under the same gunicorn (ceiling)", figures("ceiling", (), lambda: (
        f"{med('ceiling', 'rps'):,.0f} 2xx/s, {latency('ceiling')} (medians of {n_ceiling} runs, one before and "
        f"after every other run)")), ""))
    for peer in ("Node sample", "durable floor", "careful Flask"):
        rows.append((NAMES[peer], figures(peer, ("ceiling",), lambda peer=peer: against_ceiling(peer)), ""))
    rows.append(("reactor's web path without its commit (baseline)", figures("no commit", ("ceiling",), lambda: (
        against_ceiling("no commit"))), ""))
    rows.append(("reactor acknowledging only (REACTOR_INGEST=off: verify, check, redact, append; the ingest runs "
                 "elsewhere), SQLite", figures("acknowledge only", ("ceiling",), lambda: (
                     f"{against_ceiling('acknowledge only')}, only 2xx; "
                     f"{against_peer('careful Flask', 'the careful Flask app', name='acknowledge only')}, "
                     f"{against_peer('durable floor', 'the durable floor', name='acknowledge only')}")), ""))
    rows.append(("reactor ingest, 1 matching rule, SQLite", figures("1 rule", ("ceiling", "no commit"), lambda: (
        f"{med('1 rule', 'rps'):,.0f} 2xx/s = **{_spread(to_ceiling('1 rule'))}** of the ceiling runs next to it, "
        f"{against_peer('careful Flask', 'the careful Flask app', bold=True)}, "
        f"{against_peer('Node sample', 'the Node sample')}, "
        f"{against_peer('durable floor', 'the durable floor')}, "
        f"{statistics.median(same_round('1 rule', 'no commit')):.2f}x of the path without its commit (same "
        f"rounds), {latency('1 rule')}, only 2xx{drained('1 rule')}")),
        ">= 0.6x ceiling, >= 1.5x careful app, p99 <= 30 ms; stretch: the Node sample's rate"))
    low, high, middle = min(candidates), max(candidates), statistics.median(candidates)
    rows.append(("reactor ingest, 10,000 rules, SQLite (same matching rule)", figures("10,000 rules", ("1 rule",), lambda: (
        f"{med('10,000 rules', 'rps'):,.0f} 2xx/s = {_spread(same_round('10,000 rules', '1 rule'))} of 1 rule in the "
        f"same rounds, {latency('10,000 rules')}, only 2xx; each delivery meets {low}-{high} candidate rules "
        f"(median {middle:.0f}), 1 matches{drained('10,000 rules')}")), ">= 0.9x of 1 rule"))
    rows.append(("start-up to ready, 10,000 rules", f"{med('10,000 rules', 'startup'):.2f} s (1 rule: "
                 f"{med('1 rule', 'startup'):.2f} s)", "<= 5 s"))
    rows.append(("RSS per web worker after ingest", figures("1 rule", ("10,000 rules",), lambda: (
        f"{med('1 rule', 'rss'):.0f} MB (1 rule), {med('10,000 rules', 'rss'):.0f} MB (10,000 rules)")), "<= 80 MB"))
    rows.append(("reactor ingest, 1 matching rule, PostgreSQL", figures("PostgreSQL", ("ceiling",), lambda: (
        f"{against_ceiling('PostgreSQL')}, only 2xx{drained('PostgreSQL')}")), ">= 0.45x ceiling"))
    measured = [name for name in ("ceiling", *INGEST) if by[name] and name not in unmeasured]
    rows.append(("CPU per 2xx under load (the server's processes, user + system; medians)", ", ".join(
        f"{name} {statistics.median(r.cpu_us for r in by[name]):,.0f} µs" for name in measured), ""))
    return rows


def bench_ingest(tmp: Path) -> None:
    """Each target in turn with a ceiling run before and after each, the order rotated each round; every run
    signs its deliveries afresh. Rows report 2xx per second, and refuse to print on anything else."""
    rounds = 1 if QUICK else 3
    seconds = 3 if QUICK else 8
    unmeasured = {}
    if not postgres_url():
        unmeasured["PostgreSQL"] = "not measured: no PostgreSQL at 127.0.0.1:5432 and REACTOR_TEST_DATABASE_URL unset"
    if (node := prepare_node_sample()):
        unmeasured["Node sample"] = node
    names = [name for name in INGEST if name not in unmeasured]
    sequence = ["ceiling"]
    for n in range(rounds):
        for name in names[n % len(names):] + names[:n % len(names)]:
            sequence += [name, "ceiling"]
    plural = "s" if rounds > 1 else ""
    print(f"ingest (wrk, 32 connections, 2 threads, {len(sequence)} runs of {seconds} s: {rounds} round{plural} of "
          f"{', '.join(names)} in rotated order, a bare Flask ceiling run between each two):", flush=True)
    bodies = wrk.deliveries(DISTINCT)
    big_rules = crowded_rules()
    candidates, matched = candidate_counts(tmp, big_rules, bodies)
    assert matched == 300, f"{matched} matches over 300 deliveries: exactly one rule must match each"
    env = {"WEB_CONCURRENCY": None}  # as the Procfile starts it: gunicorn_conf's default
    targets = {"ceiling": (None, "bench.bare_app:create_app()"), "1 rule": (TOWN_HALL, "reactor:create_app()"),
               "10,000 rules": (big_rules, "reactor:create_app()"),
               "no commit": (TOWN_HALL, "bench.uncommitted_app:create_app()"),
               "acknowledge only": (TOWN_HALL, "reactor:create_app()"),
               "careful Flask": (None, "bench.peers.careful_flask:create_app()"),
               "durable floor": (None, "bench.peers.durable_floor:create_app()"),
               "PostgreSQL": (TOWN_HALL, "reactor:create_app()")}
    zoom = ZoomStandIn()  # real credentials and calls, paced at the default 30/s, as in production
    runs: list[Run] = []
    try:
        for k, name in enumerate(sequence):
            folder = tmp / f"ingest-{k}"
            extra, schema = {"CAREFUL_DB": str(folder / "careful.db"), "FLOOR_DIR": str(folder)}, None
            if name == "PostgreSQL":
                schema = migrated_postgres_schema()
                extra["DATABASE_URL"] = schema
            if name == "acknowledge only":  # no worker runs: the deliveries stay in the inbox
                extra.update(REACTOR_INGEST="off", REACTOR_DISPATCH="off")
            if name == "Node sample":
                server = NodeSample(folder, {**env, **extra})
            else:
                rules, app = targets[name]
                server = ReactorServer(folder, rules, {**env, **extra}, zoom, app=app)
            started = time.time()
            try:
                start(server)
                startup = time.time() - started
                script = wrk.write_script(tmp / "deliveries.lua", SECRET, bodies)  # signed now, for this run only
                cpu = cpu_seconds(server.proc.pid)
                result = wrk.run(server.url, script, seconds)
                cpu = (cpu_seconds(server.proc.pid) - cpu) / max(1, result.ok) * 1e6
                drained = backlog_drained(server, time.time()) if name in REACTOR_STORES else None
                rss = max(worker_rss_mb(server.proc.pid), default=0.0)
            finally:
                server.stop()
                if schema:
                    drop_schema(schema)
            runs.append(Run(name, result, startup, rss, drained, cpu))
            bad = ", ".join(f"{s}: {c}" for s, c in result.not_ok.items()) or "only 2xx"
            after = ("" if drained is None else f", backlog drained {drained:.1f} s after" if drained < math.inf
                     else f", backlog not drained within {DRAIN_LIMIT:.0f} s")
            print(f"    run {k + 1}/{len(sequence)} {name}: {result.ok_per_second:,.0f} 2xx/s ({bad}){after}", flush=True)
    finally:
        zoom.close()
    for name, value, target in ingest_rows(runs, candidates, unmeasured):
        row(name, value, target)


def bench_metrics(tmp: Path) -> None:
    """Ingest (1 rule, SQLite) with REACTOR_METRICS=1 against =0, alternating in one run so both see the same
    machine; the row gives the medians and their difference."""
    rounds = 1 if QUICK else 3
    seconds = 3 if QUICK else 8
    print(f"metrics (wrk as ingest, {2 * rounds} runs of {seconds} s alternating metrics off and on):", flush=True)
    bodies = wrk.deliveries(DISTINCT)
    zoom = ZoomStandIn()
    rates: dict[str, list[float]] = {"0": [], "1": []}
    refused = []
    try:
        for k in range(rounds):
            for flag in ("0", "1") if k % 2 == 0 else ("1", "0"):
                server = ReactorServer(tmp / f"metrics-{k}-{flag}", TOWN_HALL,
                                       {"WEB_CONCURRENCY": None, "REACTOR_METRICS": flag}, zoom)
                try:
                    start(server)
                    script = wrk.write_script(tmp / "deliveries.lua", SECRET, bodies)
                    result = wrk.run(server.url, script, seconds)
                finally:
                    server.stop()
                rates[flag].append(result.ok_per_second)
                refused += [f"metrics={flag} {s}: {c}" for s, c in result.not_ok.items()]
                print(f"    metrics={flag}: {result.ok_per_second:,.0f} 2xx/s", flush=True)
    finally:
        zoom.close()
    if refused:
        row("ingest, metrics on vs off (1 rule)", f"REFUSED: answers other than 2xx ({', '.join(refused)})")
        return
    on, off = statistics.median(rates["1"]), statistics.median(rates["0"])
    row("ingest, metrics on vs off (1 rule)", f"{on:,.0f} vs {off:,.0f} 2xx/s, median of {rounds} each "
        f"({(on - off) / off * 100:+.1f}%)", "within 5%")


CONSOLE_PASSWORD = "bench-console-password-1"


def console_refresher(url: str, stop: threading.Event, pages: list) -> None:
    """An operator with the console open: logged in, the overview and the deliveries list every second."""
    session = requests.Session()
    form = session.get(url + "/console/login", timeout=10).text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    session.post(url + "/console/login", data={"csrf": token, "password": CONSOLE_PASSWORD}, timeout=10)
    while not stop.wait(1.0):
        for page in ("/console", "/console/deliveries"):
            answer = session.get(url + page, timeout=10)
            pages.append(answer.status_code)


def bench_console_load(tmp: Path) -> None:
    """Ingest (1 rule, SQLite) with an operator refreshing the console every second against without, in
    pairs run next to each other (the order alternating); the row gives the median and range of the
    per-pair ratios. Then the quieter figure: the CPU of one refresh, measured in one process on a database
    like the runs' (bench/console.py refresh-cpu), against the CPU per second reactor used for ingest
    without the console: the share of ingest's CPU a refresh every second costs."""
    pairs = 1 if QUICK else 5
    seconds = 3 if QUICK else 5
    print(f"console load (wrk as ingest, {pairs} pair(s) of {seconds} s runs, with and without a console user "
          f"refreshing two pages every second, the order alternating):", flush=True)
    bodies = wrk.deliveries(DISTINCT)
    zoom = ZoomStandIn()
    rates: dict[bool, list[float]] = {False: [], True: []}
    ingest_cpu, stored, refused, pages = [], [], [], []
    try:
        for k in range(pairs):
            for watched in (False, True) if k % 2 == 0 else (True, False):
                server = ReactorServer(tmp / f"console-load-{k}-{int(watched)}", TOWN_HALL,
                                       {"WEB_CONCURRENCY": None, "REACTOR_CONSOLE_PASSWORD": CONSOLE_PASSWORD}, zoom)
                stop = threading.Event()
                try:
                    start(server)
                    script = wrk.write_script(tmp / "deliveries.lua", SECRET, bodies)
                    operator = threading.Thread(target=console_refresher, args=(server.url, stop, pages), daemon=True)
                    if watched:
                        operator.start()
                    used = cpu_seconds(server.proc.pid)
                    result = wrk.run(server.url, script, seconds)
                    used = cpu_seconds(server.proc.pid) - used
                finally:
                    stop.set()
                    if watched:
                        operator.join(15)
                    server.stop()
                rates[watched].append(result.ok_per_second)
                if not watched:
                    ingest_cpu.append(used / result.seconds)
                stored.append(result.ok)
                refused += [f"{'with' if watched else 'without'} console {s}: {c}" for s, c in result.not_ok.items()]
                print(f"    pair {k + 1} {'with' if watched else 'without'} a console user: {result.ok_per_second:,.0f} "
                      f"2xx/s, reactor used {used / result.seconds:.2f} CPU-s/s", flush=True)
    finally:
        zoom.close()
    name = "ingest with a console user refreshing every second vs without (1 rule, SQLite)"
    bad_pages = [p for p in pages if p != 200]
    if refused or bad_pages or not pages:
        row(name, f"REFUSED: answers other than 2xx ({', '.join(refused) or 'none'}); console pages not 200: "
                  f"{len(bad_pages)} of {len(pages)}")
        return
    ratios = [w / a - 1 for w, a in zip(rates[True], rates[False])]
    watched, alone = statistics.median(rates[True]), statistics.median(rates[False])
    row(name, f"{statistics.median(ratios) * 100:+.1f}%, median of {pairs} pairs run next to each other "
              f"({min(ratios) * 100:+.0f}% to {max(ratios) * 100:+.0f}%; {watched:,.0f} vs {alone:,.0f} 2xx/s); "
              f"{len(pages)} console pages served, all 200", "within 5%")
    deliveries = int(statistics.median(stored))
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "console.py"), "refresh-cpu", str(seconds),
                          str(deliveries), "100000"], capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit(f"bench/console.py refresh-cpu failed:\n{out.stderr}")
    cpu = json.loads(out.stdout.strip().splitlines()[-1])
    ingest = statistics.median(ingest_cpu)
    mine, big = cpu[str(deliveries)], cpu["100000"]
    row("console refresh CPU (overview + deliveries list, one process) against ingest's CPU without it",
        f"{mine['refresh']:.1f} ms per refresh on {deliveries:,} deliveries in the last {seconds} s (overview "
        f"{mine['overview counted']:.1f} ms counted, {mine['overview shared']:.1f} ms shared; list "
        f"{mine['deliveries list']:.1f} ms), {big['refresh']:.1f} ms on 100,000; ingest used {ingest:.2f} CPU-s/s "
        f"(median of {pairs}): a refresh every second costs {mine['refresh'] / 1000 / ingest * 100:.1f}% of it "
        f"({big['refresh'] / 1000 / ingest * 100:.1f}% on 100,000)", "within 5%")


ACCOUNTS_CONFIGURED = 50


def accounts_file(tmp: Path, count: int) -> tuple[Path, dict]:
    """An accounts file of `count` accounts and the environment its references read. The bench deliveries
    (payload.account_id "bench", signed with SECRET) are the last account's: the shared URL finds it
    among all the others."""
    lines, env = ["accounts:"], {}
    for n in range(count):
        last = n == count - 1
        lines += [f"  - name: acct-{n}", f"    account_id: {'bench' if last else f'Acct{n:04d}'}",
                  f"    client_id: client-{n}", f"    client_secret: ${{BENCH_CLIENT_{n}}}",
                  f"    secret_tokens: ${{BENCH_TOKEN_{n}}}"]
        env[f"BENCH_CLIENT_{n}"] = f"bench-client-secret-{n}"
        env[f"BENCH_TOKEN_{n}"] = SECRET if last else f"bench-token-{n}-{'x' * 20}"
    path = tmp / f"accounts-{count}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, env


def bench_accounts(tmp: Path) -> None:
    """Ingest (1 rule, SQLite, calls to the stand-in) with 50 accounts configured against the one account of
    the ZOOM_* settings, alternating in one run; the row gives the medians and their difference."""
    rounds = 1 if QUICK else 3
    seconds = 3 if QUICK else 8
    print(f"accounts (wrk as ingest, {2 * rounds} runs of {seconds} s, alternating {ACCOUNTS_CONFIGURED} accounts "
          f"configured and one):", flush=True)
    bodies = wrk.deliveries(DISTINCT, account_id="bench")  # the account of both set-ups: calls planned in both
    path, account_env = accounts_file(tmp, ACCOUNTS_CONFIGURED)
    single = {"WEB_CONCURRENCY": None, "ZOOM_ACCOUNT_ID": "bench"}
    several = {**single, **account_env, "REACTOR_ACCOUNTS": str(path), "ZOOM_ACCOUNT_ID": None, "ZOOM_CLIENT_ID": None,
               "ZOOM_CLIENT_SECRET": None, "ZOOM_WEBHOOK_SECRET_TOKEN": None}
    zoom = ZoomStandIn()
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    refused = []
    try:
        for k in range(rounds):
            for many in (False, True) if k % 2 == 0 else (True, False):
                server = ReactorServer(tmp / f"accounts-{k}-{int(many)}", TOWN_HALL, several if many else single, zoom)
                try:
                    start(server)
                    script = wrk.write_script(tmp / "deliveries.lua", SECRET, bodies)
                    before = cpu_seconds(server.proc.pid)
                    result = wrk.run(server.url, script, seconds)
                    cpu[many].append((cpu_seconds(server.proc.pid) - before) / max(1, result.ok) * 1e6)
                finally:
                    server.stop()
                rates[many].append(result.ok_per_second)
                refused += [f"{'many' if many else 'one'} {s}: {c}" for s, c in result.not_ok.items()]
                print(f"    {ACCOUNTS_CONFIGURED if many else 1} account(s): {result.ok_per_second:,.0f} 2xx/s",
                      flush=True)
    finally:
        zoom.close()
    name = f"ingest with {ACCOUNTS_CONFIGURED} accounts configured vs one (1 rule, SQLite, shared URL)"
    if refused:
        row(name, f"REFUSED: answers other than 2xx ({', '.join(refused)})")
        return
    many, one = statistics.median(rates[True]), statistics.median(rates[False])
    cpu_many, cpu_one = statistics.median(cpu[True]), statistics.median(cpu[False])
    row(name, f"{many:,.0f} vs {one:,.0f} 2xx/s, median of {rounds} each ({(many - one) / one * 100:+.1f}%); CPU per "
              f"2xx of the server's processes {cpu_many:,.0f} vs {cpu_one:,.0f} µs ({(cpu_many - cpu_one) / cpu_one * 100:+.1f}%)",
        "within 5%")


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


def reaction_row(latencies: list[float], statuses: Counter, sent: int) -> str:
    """p50 and a nearest-rank p99 of webhook -> Zoom call, refused unless every post got a 200 and every
    webhook reached Zoom; no p99 under P99_SAMPLES samples."""
    bad = {status: count for status, count in statuses.items() if status != 200}
    if bad:
        what = ", ".join(f"{status}: {count}" for status, count in sorted(bad.items()))
        return f"REFUSED: {sum(bad.values())} of {sent} webhooks not answered 200 ({what})"
    if len(latencies) < sent:
        return f"REFUSED: only {len(latencies)} of {sent} webhooks reached Zoom"
    p99 = (f"p99 {nearest_rank(latencies, 99):.1f} ms (nearest rank)" if len(latencies) >= P99_SAMPLES
           else f"p99 not reported (under {P99_SAMPLES} samples)")
    return f"p50 {statistics.median(latencies):.1f} ms, {p99}, {len(latencies)} events"


def bench_reaction(tmp: Path) -> None:
    print("reaction (post -> Zoom stand-in receives the PATCH), pacing off (REACTOR_ZOOM_RATE=1000):", flush=True)
    postgres = postgres_url()
    for label in ("SQLite", "PostgreSQL"):
        for rate, seconds in ((10, 3 if QUICK else 20), (200, 1 if QUICK else 3)):
            name = f"reaction (webhook -> Zoom call), {label}, {rate}/s, pacing off (REACTOR_ZOOM_RATE=1000)"
            target = "p50 <= 10 ms, p99 <= 50 ms" if (label, rate) == ("SQLite", 10) else ""
            if label == "PostgreSQL" and not postgres:
                row(name, "not measured: no PostgreSQL at 127.0.0.1:5432 and REACTOR_TEST_DATABASE_URL unset", target)
                continue
            zoom = ZoomStandIn()
            env = {"REACTOR_ZOOM_RATE": "1000"}
            schema = migrated_postgres_schema() if label == "PostgreSQL" else None
            if schema:
                env["DATABASE_URL"] = schema
            server = start(ReactorServer(tmp / f"react-{label}-{rate}", PLAIN, env, zoom))  # stopped if not ready
            try:
                sent, statuses = {}, Counter()
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
                    statuses[session.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw),
                                          timeout=10).status_code] += 1
                deadline = time.time() + 60
                while len(zoom.api_calls()) < count and time.time() < deadline:
                    time.sleep(0.05)
                lat = [(c.at - sent[c.path.split("/")[3]]) * 1000 for c in zoom.api_calls()]
                row(name, reaction_row(lat, statuses, count), target)
            finally:
                server.stop()
                zoom.close()
                if schema:
                    drop_schema(schema)


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
    # the 10,000 rules of the ingest row, whose deliveries land in populated index buckets
    path = tmp / "rules-crowded.yaml"
    path.write_text(crowded_rules())
    rules = load_rules(path)
    bodies = wrk.deliveries(2_000)
    events = [event_from_body(json.loads(b), b) for b in bodies]
    candidates = sum(len(rules.candidates(e)) for e in events)
    first = time.perf_counter()  # a first pass over other deliveries, as a running ingester has made: the
    for body in wrk.deliveries(2_000):  # lists' groups and verdict pieces, made when a list is first met
        rules.encoded(event_from_body(json.loads(body), body))
    first = time.perf_counter() - first
    spent = {}
    for name, verdicts in (("encoded", lambda e: encode_verdicts(rules.encoded(e)[1])),  # what the ingester stores
                           ("evaluate", lambda e: [(v.rule.name, v.matched, str(v.failure or "")) for v in rules.evaluate(e)])):
        for e in events:  # each event as the ingester meets it: nothing read of it yet
            e.cache.clear()
        started = time.perf_counter()
        for e in events:
            verdicts(e)
        spent[name] = time.perf_counter() - started
    matched = sum(len(rules.encoded(e)[0]) for e in events)
    row("engine, the ingest row's 10,000 rules", f"{len(events) / spent['encoded']:,.0f} events/s, {candidates / len(events):.1f} "
        f"candidates per event, {spent['encoded'] / candidates * 1e6:.1f} µs each with its verdict's JSON, as the ingester "
        f"stores it (evaluating them as objects, as explain does: {spent['evaluate'] / candidates * 1e6:.1f} µs each), "
        f"after a first pass over 2,000 other deliveries that took {first / candidates * 1e6:.1f} µs a candidate "
        f"({matched} matches)")


# -- 4. burst drain and 5. memory -----------------------------------------------------------------------


def bench_burst(tmp: Path) -> None:
    total, rate = (1000, 80) if QUICK else (5000, 80)
    print(f"burst drain ({total} meeting.started in ~10 s, pacing {rate}/s, Zoom limiting at {rate}/s):", flush=True)
    zoom = ZoomStandIn()
    window: list[float] = []
    lock = threading.Lock()
    retried: Counter = Counter()

    def zoom_limit(call):  # Zoom's limiter, as seen from outside: more than `rate` in the last second -> 429
        with lock:
            while window and window[0] < call.at - 1.0:
                window.pop(0)
            if len(window) >= rate:
                return Reply(429, {"code": 429, "message": "Too many requests"}, {"Retry-After": "1"})
            window.append(call.at)
        return None

    zoom.chaos = zoom_limit
    server = start(ReactorServer(tmp / "burst", PLAIN, {"REACTOR_ZOOM_RATE": str(rate), "WEB_CONCURRENCY": None}, zoom))
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
                while (status := session.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw),
                                              timeout=10).status_code) != 200:
                    with lock:
                        retried[status] += 1
                    time.sleep(0.1)  # as Zoom would: again, signed again

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
        again = f" ({', '.join(f'{k}: {v}' for k, v in sorted(retried.items()))})" if retried else ""
        row(f"burst drain {total} at {rate}/s", f"{drained:.1f} s (floor {floor:.1f} s, {drained / floor:.2f}x; posted in "
            f"{posted:.1f} s), 429s {limited}, lost {total - len(counts)}, doubled "
            f"{sum(1 for v in counts.values() if v > 1)}, posts answered other than 200 and sent again "
            f"{sum(retried.values())}{again}",
            "<= 1.10x floor, 0 lost, 0 doubled")
        row("RSS per web worker, idle -> after burst", f"{max(idle):.0f} MB -> {max(worker_rss_mb(server.proc.pid)):.0f} MB",
            "<= 80 MB")
    finally:
        server.stop()
        zoom.close()


# -- 6. ingest through the shipped proxy ------------------------------------------------------------------

PROXIED = ("straight to gunicorn", "through the proxy")  # the order alternates each round


def proxy_rows(runs: list[Run]) -> list[tuple[str, str, str]]:
    """The proxy row: reactor's ingest through the Caddyfile's Caddy against straight to gunicorn, same rounds;
    refused when either target's runs had any answer but a 2xx."""
    by = {name: [r for r in runs if r.name == name] for name in PROXIED}
    for name in PROXIED:
        why = refusal(by[name], stores=True)
        if why:
            return [("reactor ingest through the proxy (Caddyfile) against straight to gunicorn, SQLite",
                     f"REFUSED: {name}: {why}", "")]
    straight, proxied = by[PROXIED[0]], by[PROXIED[1]]

    def med(rs: list[Run], key: str) -> float:
        return statistics.median(r.result.ok_per_second if key == "rps" else getattr(r.result, key) for r in rs)

    ratios = [p.result.ok_per_second / s.result.ok_per_second for s, p in zip(straight, proxied)]
    return [("reactor ingest through the proxy (Caddyfile) against straight to gunicorn, SQLite",
             f"{med(proxied, 'rps'):,.0f} 2xx/s = {_spread(ratios)} of straight to gunicorn in the same rounds "
             f"({med(straight, 'rps'):,.0f} 2xx/s); p50 {med(proxied, 'p50'):.1f} ms, p99 {med(proxied, 'p99'):.1f} ms "
             f"through the proxy against p50 {med(straight, 'p50'):.1f} ms, p99 {med(straight, 'p99'):.1f} ms; only 2xx",
             "")]


def bench_proxy(tmp: Path) -> None:
    """reactor as compose runs it (Caddy in front) against gunicorn alone, alternating, a fresh reactor per run."""
    from tests.test_proxy import CADDY, Caddy

    name = "reactor ingest through the proxy (Caddyfile) against straight to gunicorn, SQLite"
    if CADDY is None:
        row(name, "not measured: caddy is not installed (apt-get install -y caddy)")
        return
    rounds = 1 if QUICK else 4
    seconds = 3 if QUICK else 8
    sequence = [target for n in range(rounds) for target in (PROXIED if n % 2 == 0 else PROXIED[::-1])]
    print(f"ingest through the proxy (wrk, 32 connections, 2 threads, {len(sequence)} runs of {seconds} s: "
          f"{rounds} round{'s' if rounds > 1 else ''}, the order alternating):", flush=True)
    bodies = wrk.deliveries(DISTINCT)
    zoom = ZoomStandIn()
    runs: list[Run] = []
    try:
        for k, target in enumerate(sequence):
            folder = tmp / f"proxy-{k}"
            server = ReactorServer(folder, TOWN_HALL, {"WEB_CONCURRENCY": None}, zoom)
            caddy = None
            try:
                start(server)
                if target == PROXIED[1]:
                    caddy = Caddy(folder, f"127.0.0.1:{server.port}").start()
                script = wrk.write_script(tmp / "proxy-deliveries.lua", SECRET, bodies)  # signed now, for this run
                result = wrk.run(caddy.url if caddy else server.url, script, seconds)
            finally:
                if caddy:
                    caddy.stop()
                server.stop()
            runs.append(Run(target, result))
            bad = ", ".join(f"{s}: {c}" for s, c in result.not_ok.items()) or "only 2xx"
            print(f"    run {k + 1}/{len(sequence)} {target}: {result.ok_per_second:,.0f} 2xx/s ({bad})", flush=True)
    finally:
        zoom.close()
    for name, value, target in proxy_rows(runs):
        row(name, value, target)


def bench_console_section(tmp: Path) -> None:
    """7. the console's pages on 1,000,000 deliveries per backend (bench/console.py)."""
    from bench.console import bench_console

    for backend in ("SQLite", "PostgreSQL"):
        (tmp / backend).mkdir(exist_ok=True)
    bench_console(tmp, row)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="reactor-bench-") as folder:
        tmp = Path(folder)
        only = set(sys.argv[1:]) or {"rules", "cpu", "ingest", "metrics", "reaction", "burst", "proxy", "console",
                                     "console-load", "accounts"}
        for name, fn in (("rules", bench_rules), ("cpu", bench_cpu), ("ingest", bench_ingest),
                         ("metrics", bench_metrics), ("reaction", bench_reaction), ("burst", bench_burst),
                         ("proxy", bench_proxy), ("console", bench_console_section),
                         ("console-load", bench_console_load), ("accounts", bench_accounts)):
            if name in only:
                fn(tmp)
    width = max(len(r[0]) for r in ROWS)
    print("\n| measure | result | target |\n|---|---|---|")
    for name, value, target in ROWS:
        print(f"| {name:<{width}} | {value} | {target} |")
    refused = [name for name, value, _ in ROWS if value.startswith("REFUSED")]
    if refused:
        print(f"\n{len(refused)} row(s) refused (answers other than 2xx; see above): {'; '.join(refused)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
