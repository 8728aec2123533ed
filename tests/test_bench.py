"""`make bench` stays runnable and cannot flatter.

Its sections that need no wrk run in their short form and must print their rows (figures are not
asserted: benchmarks are not timed tests). A row measured with any answer but a 2xx is refused: it
says why and prints no figure, whether the answers come from a real wrk against a real reactor
answering 401 or from the row-building function fed such a result.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench import wrk
from bench.run import (INGEST, NAMES, TOWN_HALL, NodeSample, Run, ingest_rows, nearest_rank, prepare_node_sample,
                       reaction_row)
from reactor.signature import url_validation_answer
from tests.conftest import ROOT, SECRET, ReactorServer, event
from tests.zoom_standin import ZoomStandIn


def test_bench_rules_and_cpu_sections_print_their_rows():
    out = subprocess.run([sys.executable, "bench/run.py", "rules", "cpu"], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", ""), "BENCH_QUICK": "1"}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    table = out.stdout.split("| measure | result | target |", 1)[1]
    for count in ("10", "1,000", "10,000"):
        assert re.search(rf"\| engine, {count} rules +\| [\d,]+ events/s, load [\d.]+ s \(\d+ matches\)", table), table
    crowded = re.search(r"\| engine, the ingest row's 10,000 rules +\| [\d,]+ events/s, ([\d.]+) candidates per event, "
                        r"[\d.]+ µs each with its verdict's JSON, as the ingester stores it \(evaluating them as objects, "
                        r"as explain does: [\d.]+ µs each\), after a first pass over 2,000 other deliveries that took "
                        r"([\d.]+) µs a candidate \((\d+) matches\)", table)
    assert crowded and float(crowded.group(1)) > 40 and crowded.group(3) == "2000", table  # populated buckets
    assert float(crowded.group(2)) > 0, table  # what the lists' first meeting cost is said
    cpu = re.search(r"\| CPU per webhook, one thread, WSGI called directly +\| bare Flask (\d+) µs; reactor without "
                    r"its commit (\d+) µs \([\d.]+x\); reactor (\d+) µs", table)
    assert cpu and all(int(us) > 0 for us in cpu.groups()), table


def _result(statuses: dict, timeouts: int = 0, seconds: float = 8.0) -> wrk.Result:
    return wrk.Result(statuses=statuses, socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": timeouts},
                      seconds=seconds, p50=10.0, p99=30.0)


def _runs(one_rule: wrk.Result, careful: wrk.Result | None = None, drained: float | None = None) -> list[Run]:
    """One round as bench_ingest runs it: a ceiling run between each two targets; '1 rule' gets `one_rule`, the
    careful app `careful`, and reactor's runs `drained` as the time their backlog took to drain."""
    good = {"ceiling": _result({204: 40_000}), "Node sample": _result({200: 28_000}), "durable floor": _result({204: 24_000}),
            "careful Flask": careful or _result({200: 7_000}), "no commit": _result({200: 18_000}),
                "acknowledge only": _result({200: 12_000}),
            "10,000 rules": _result({200: 9_000}), "PostgreSQL": _result({200: 8_000}), "1 rule": one_rule}
    runs = [Run("ceiling", good["ceiling"])]
    for name in INGEST:
        backlog = drained if name in ("1 rule", "10,000 rules", "PostgreSQL") else None
        runs += [Run(name, good[name], startup=1.0, rss=50.0, drained=backlog), Run("ceiling", good["ceiling"])]
    return runs


def _rows(runs: list[Run], unmeasured: dict | None = None) -> dict[str, str]:
    return {name: value for name, value, _ in ingest_rows(runs, [41, 42], unmeasured or {})}


def test_ingest_rows_report_2xx_per_second_when_every_answer_was_2xx():
    rows = _rows(_runs(_result({200: 11_200})))
    assert rows["reactor ingest, 1 matching rule, SQLite"].startswith("1,400 2xx/s = **0.28x** of the ceiling"), rows
    assert rows["reactor ingest, 10,000 rules, SQLite (same matching rule)"].startswith("1,125 2xx/s = 0.80x of 1 rule")
    assert "41-42 candidate rules" in rows["reactor ingest, 10,000 rules, SQLite (same matching rule)"]
    assert not any(value.startswith("REFUSED") for value in rows.values()), rows
    # the peers against the ceiling; reactor against the careful app and the Node sample, same rounds
    assert rows[NAMES["Node sample"]].startswith("3,500 2xx/s = 0.70x of the ceiling"), rows
    assert rows[NAMES["careful Flask"]].startswith("875 2xx/s = 0.17x of the ceiling"), rows
    assert "**1.60x** of the careful Flask app, 0.40x of the Node sample, 0.47x of the durable floor" in rows[
        "reactor ingest, 1 matching rule, SQLite"]
    assert rows[NAMES["durable floor"]].startswith("3,000 2xx/s = 0.60x of the ceiling"), rows
    assert rows["reactor acknowledging only (REACTOR_INGEST=off: verify, check, redact, append; the ingest runs "
                "elsewhere), SQLite"].endswith("only 2xx; 1.71x of the careful Flask app, 0.50x of the durable floor")
    assert rows["reactor ingest, 1 matching rule, PostgreSQL"].startswith("1,000 2xx/s = 0.20x of the ceiling")
    assert not any("backlog" in value for value in rows.values()), rows  # a store without an inbox: nothing said


def test_ingest_rows_say_when_the_backlog_drained_and_what_was_not_measured():
    rows = _rows(_runs(_result({200: 11_200}), drained=1.25))
    for name in ("reactor ingest, 1 matching rule, SQLite", "reactor ingest, 10,000 rules, SQLite (same matching rule)",
                 "reactor ingest, 1 matching rule, PostgreSQL"):
        assert rows[name].endswith("; backlog drained 1.2 s after the run (median, max 1.2 s)"), rows[name]
    assert "not drained within 120 s after 1 of 1 runs" in _rows(_runs(_result({200: 11_200}), drained=float("inf")))[
        "reactor ingest, 1 matching rule, SQLite"]
    runs = [r for r in _runs(_result({200: 11_200})) if r.name not in ("Node sample", "PostgreSQL")]
    rows = _rows(runs, {"Node sample": "not measured: node/npm missing", "PostgreSQL": "not measured: no server"})
    assert rows[NAMES["Node sample"]] == "not measured: node/npm missing"
    assert rows["reactor ingest, 1 matching rule, PostgreSQL"] == "not measured: no server"
    one = rows["reactor ingest, 1 matching rule, SQLite"]
    assert "of the careful Flask app, no ratio to the Node sample (not measured), " in one, one


def test_ingest_row_with_any_non_2xx_answer_is_refused_without_figures():
    # a slow run whose signatures went stale: fast 401s that wrk's Requests/sec would count as throughput
    rows = _rows(_runs(_result({200: 3_000, 401: 40_000, 503: 2})))
    one = rows["reactor ingest, 1 matching rule, SQLite"]
    assert one.startswith("REFUSED: 40002 requests not answered with a 2xx") and "401: 40000, 503: 2" in one, one
    assert not re.search(r"\d[\d,]* 2xx/s|\d+\.\d+x|p99 \d", one), one  # no figure at all
    # rows computed against it are refused too; rows that are not are still printed
    assert rows["reactor ingest, 10,000 rules, SQLite (same matching rule)"].startswith("REFUSED: its baseline")
    assert rows["reactor ingest, 1 matching rule, PostgreSQL"].startswith("1,000 2xx/s")
    # a refused peer (its slowest request timed out) is refused; reactor's row keeps its figures without that ratio
    careful = _rows(_runs(_result({200: 11_200}), careful=_result({200: 5_000}, timeouts=1)))
    assert careful[NAMES["careful Flask"]].startswith("REFUSED: 1 requests not answered with a 2xx"), careful
    one = careful["reactor ingest, 1 matching rule, SQLite"]
    assert one.startswith("1,400 2xx/s = **0.28x** of the ceiling runs next to it, no ratio to the careful Flask app "
                          "(its row was refused), 0.40x of the Node sample"), one
    # requests that never got an answer are refused the same way
    timeouts = _rows(_runs(_result({200: 11_200}, timeouts=3)))["reactor ingest, 1 matching rule, SQLite"]
    assert timeouts.startswith("REFUSED") and "timeout: 3" in timeouts, timeouts


def test_a_wrk_run_that_cannot_connect_is_a_refusal_not_a_crash(tmp_path):
    """wrk against a port nothing listens on (a peer that died after its readiness answer) prints no counts:
    the run counts as one request never answered, so its row is refused and the bench carries on."""
    from tests.conftest import free_port

    result = wrk.run(f"http://127.0.0.1:{free_port()}", wrk.write_script(tmp_path / "d.lua", SECRET,
                                                                         wrk.deliveries(10)), seconds=1)
    assert result.ok == 0 and result.not_ok == {"connect": 1}


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
    secret) gives a refused row, and the same deliveries signed with its secret a row of figures. Set up as
    the bench sets reactor up (Zoom's account and credentials), each delivery plans a call."""
    zoom = ZoomStandIn()
    server = ReactorServer(tmp_path / "reactor", TOWN_HALL, zoom=zoom).start()
    try:
        bodies = wrk.deliveries(2_000)
        wrong = wrk.run(server.url, wrk.write_script(tmp_path / "wrong.lua", "not-the-secret", bodies), seconds=1,
                        connections=4)
        right = wrk.run(server.url, wrk.write_script(tmp_path / "right.lua", SECRET, bodies), seconds=1, connections=4)
        [delivery] = server.history(limit=1)  # the bench's deliveries take the path of any: a call planned, no note
    finally:
        server.stop()
        zoom.close()
    assert [v["rule"] for v in delivery["verdicts"]] == ["Plain"] and delivery["verdicts"][0]["matched"], delivery
    assert [j["action"]["kind"] for j in delivery["jobs"]] == ["livestream.start"], delivery["jobs"]
    assert set(wrong.statuses) == {401} and wrong.ok == 0 and wrong.ok_per_second == 0, wrong
    assert set(right.statuses) == {200} and right.ok > 0 and right.not_ok == {}, right
    refused = _rows(_runs(wrong))["reactor ingest, 1 matching rule, SQLite"]
    assert refused.startswith("REFUSED") and f"401: {wrong.answered}" in refused, refused
    printed = _rows(_runs(right))["reactor ingest, 1 matching rule, SQLite"]
    assert re.match(r"[\d,]+ 2xx/s = \*\*[\d.]+x\*\*", printed), printed


def _compact(body: dict) -> bytes:
    """As Zoom sends a body: compact JSON (the Node sample re-serialises the parsed body to check the signature)."""
    return json.dumps(body, separators=(",", ":")).encode()


def _check_peer(server: ReactorServer) -> None:
    """A peer answers like a webhook receiver: 200 to a signed delivery, 401 to a bad signature, and Zoom's URL
    validation with the HMAC of its plainToken."""
    assert server.post(None, raw=_compact(event())).status_code == 200
    assert server.post(None, raw=_compact(event()), secret="not-the-secret").status_code == 401
    plain = {"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": 1654503849680,
             "event": "endpoint.url_validation"}
    assert server.post(None, raw=_compact(plain)).json() == url_validation_answer(SECRET, "qgg8vlvZRS6UYooatFL8Aw")


def test_careful_flask_peer_verifies_answers_validation_and_stores_each_delivery_durably(tmp_path):
    db = tmp_path / "careful.db"
    server = ReactorServer(tmp_path, env={"CAREFUL_DB": str(db)}, app="bench.peers.careful_flask:create_app()").start()
    try:
        _check_peer(server)
        assert server.post(event(), timestamp=int(time.time()) - 301).status_code == 401  # outside the 5 minutes
    finally:
        server.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert [e for e, in conn.execute("SELECT event FROM deliveries")] == ["meeting.started"]  # only the signed one


def test_durable_floor_peer_syncs_each_body_to_its_file_before_answering(tmp_path):
    """The floor does no more than the ceiling plus a durable append: every body it answered is in its files,
    whole."""
    server = ReactorServer(tmp_path, env={"FLOOR_DIR": str(tmp_path)}, app="bench.peers.durable_floor:create_app()")
    server.start()
    sent = [_compact(event(meeting_id=str(85746065000 + n))) for n in range(40)]
    try:
        with ThreadPoolExecutor(8) as pool:  # concurrent requests share group commits
            statuses = list(pool.map(lambda raw: server.post(None, raw=raw).status_code, sent))
    finally:
        server.stop()
    assert statuses == [204] * 40
    stored = []
    for path in tmp_path.glob("floor-*.log"):
        data = path.read_bytes()
        while data:
            size = int.from_bytes(data[:4], "little")
            stored.append(data[4:4 + size])
            data = data[4 + size:]
    assert sorted(stored) == sorted(sent)


def test_node_sample_peer_verifies_and_answers_validation(tmp_path):
    why = prepare_node_sample()
    if why:
        pytest.skip(why)
    server = NodeSample(tmp_path).start()
    try:
        _check_peer(server)
    finally:
        server.stop()
    assert "meeting.started" in server.logs()  # it logs the body, as Zoom's sample does
