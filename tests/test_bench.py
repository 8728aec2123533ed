"""`make bench` stays runnable and cannot flatter.

Its sections that need no wrk run in their short form and must print their rows (figures are not
asserted: benchmarks are not timed tests). A row measured with any answer but a 2xx is refused: it
says why and prints no figure, whether the answers come from a real wrk against a real reactor
answering 401 or from the row-building function fed such a result.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from bench import wrk
from bench.run import INGEST, TOWN_HALL, Run, ingest_rows, nearest_rank, reaction_row
from tests.conftest import ROOT, SECRET, ReactorServer


def test_bench_rules_and_cpu_sections_print_their_rows():
    out = subprocess.run([sys.executable, "bench/run.py", "rules", "cpu"], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", ""), "BENCH_QUICK": "1"}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    table = out.stdout.split("| measure | result | target |", 1)[1]
    for count in ("10", "1,000", "10,000"):
        assert re.search(rf"\| engine, {count} rules +\| [\d,]+ events/s, load [\d.]+ s \(\d+ matches\)", table), table
    crowded = re.search(r"\| engine, the ingest row's 10,000 rules +\| [\d,]+ events/s, ([\d.]+) candidates per event "
                        r"evaluated, [\d.]+ µs each \((\d+) matches\)", table)
    assert crowded and float(crowded.group(1)) > 40 and crowded.group(2) == "2000", table  # populated buckets
    cpu = re.search(r"\| CPU per webhook, one thread, WSGI called directly +\| bare Flask (\d+) µs; reactor without "
                    r"its commit (\d+) µs \([\d.]+x\); reactor (\d+) µs", table)
    assert cpu and all(int(us) > 0 for us in cpu.groups()), table


def _result(statuses: dict, timeouts: int = 0, seconds: float = 8.0) -> wrk.Result:
    return wrk.Result(statuses=statuses, socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": timeouts},
                      seconds=seconds, p50=10.0, p99=30.0)


def _runs(one_rule: wrk.Result) -> list[Run]:
    """One round as bench_ingest runs it: a ceiling run between each two targets; '1 rule' gets `one_rule`."""
    good = {"ceiling": _result({204: 40_000}), "no commit": _result({200: 18_000}), "10,000 rules": _result({200: 9_000}),
            "PostgreSQL": _result({200: 8_000}), "1 rule": one_rule}
    runs = [Run("ceiling", good["ceiling"])]
    for name in INGEST:
        runs += [Run(name, good[name], startup=1.0, rss=50.0), Run("ceiling", good["ceiling"])]
    return runs


def _rows(runs: list[Run]) -> dict[str, str]:
    return {name: value for name, value, _ in ingest_rows(runs, [41, 42], postgres="postgresql://x")}


def test_ingest_rows_report_2xx_per_second_when_every_answer_was_2xx():
    rows = _rows(_runs(_result({200: 11_200})))
    assert rows["reactor ingest, 1 matching rule, SQLite"].startswith("1,400 2xx/s = **0.28x** of the ceiling"), rows
    assert rows["reactor ingest, 10,000 rules, SQLite (same matching rule)"].startswith("1,125 2xx/s = 0.80x of 1 rule")
    assert "41-42 candidate rules" in rows["reactor ingest, 10,000 rules, SQLite (same matching rule)"]
    assert not any(value.startswith("REFUSED") for value in rows.values()), rows


def test_ingest_row_with_any_non_2xx_answer_is_refused_without_figures():
    # a slow run whose signatures went stale: fast 401s that wrk's Requests/sec would count as throughput
    rows = _rows(_runs(_result({200: 3_000, 401: 40_000, 503: 2})))
    one = rows["reactor ingest, 1 matching rule, SQLite"]
    assert one.startswith("REFUSED: 40002 requests not answered with a 2xx") and "401: 40000, 503: 2" in one, one
    assert not re.search(r"\d[\d,]* 2xx/s|\d+\.\d+x|p99 \d", one), one  # no figure at all
    # rows computed against it are refused too; rows that are not are still printed
    assert rows["reactor ingest, 10,000 rules, SQLite (same matching rule)"].startswith("REFUSED: its baseline")
    assert rows["reactor ingest, 1 matching rule, PostgreSQL"].startswith("1,000 2xx/s")
    # requests that never got an answer are refused the same way
    timeouts = _rows(_runs(_result({200: 11_200}, timeouts=3)))["reactor ingest, 1 matching rule, SQLite"]
    assert timeouts.startswith("REFUSED") and "timeout: 3" in timeouts, timeouts


def test_reaction_row_refuses_non_200_and_reports_p99_only_over_200_samples():
    assert reaction_row([5.0] * 200, Counter({200: 199, 401: 1}), 200).startswith("REFUSED: 1 of 200 webhooks")
    assert reaction_row([5.0] * 199, Counter({200: 200}), 200).startswith("REFUSED: only 199 of 200")
    assert "p99 not reported" in reaction_row([5.0] * 50, Counter({200: 50}), 50)
    latencies = [float(n) for n in range(1, 201)]  # nearest rank: the 198th of 200
    assert reaction_row(latencies, Counter({200: 200}), 200).startswith("p50 100.5 ms, p99 198.0 ms (nearest rank)")
    assert nearest_rank([3.0, 1.0, 2.0], 50) == 2.0 and nearest_rank([1.0, 2.0], 99) == 2.0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (make bench installs it: apt-get install wrk)")
def test_real_wrk_against_reactor_answering_401_makes_a_refused_row(tmp_path):
    """wrk's script counts the answers by status: a reactor that answers 401 (deliveries signed with another
    secret) gives a refused row, and the same deliveries signed with its secret a row of figures."""
    server = ReactorServer(tmp_path / "reactor", TOWN_HALL).start()
    try:
        bodies = wrk.deliveries(2_000)
        wrong = wrk.run(server.url, wrk.write_script(tmp_path / "wrong.lua", "not-the-secret", bodies), seconds=1,
                        connections=4)
        right = wrk.run(server.url, wrk.write_script(tmp_path / "right.lua", SECRET, bodies), seconds=1, connections=4)
    finally:
        server.stop()
    assert set(wrong.statuses) == {401} and wrong.ok == 0 and wrong.ok_per_second == 0, wrong
    assert set(right.statuses) == {200} and right.ok > 0 and right.not_ok == {}, right
    refused = _rows(_runs(wrong))["reactor ingest, 1 matching rule, SQLite"]
    assert refused.startswith("REFUSED") and f"401: {wrong.answered}" in refused, refused
    printed = _rows(_runs(right))["reactor ingest, 1 matching rule, SQLite"]
    assert re.match(r"[\d,]+ 2xx/s = \*\*[\d.]+x\*\*", printed), printed
