"""`make bench` stays runnable: its sections that need no wrk, in their short form, print their rows.

Figures are not asserted (benchmarks are not timed tests); a section that breaks, or a webhook the
CPU section sees answered with anything but 200, fails here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_rules_and_cpu_sections_print_their_rows():
    out = subprocess.run([sys.executable, "bench/run.py", "rules", "cpu"], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", ""), "BENCH_QUICK": "1"}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    table = out.stdout.split("| measure | result | target |", 1)[1]
    for count in ("10", "1,000", "10,000"):
        assert re.search(rf"\| engine, {count} rules +\| [\d,]+ events/s, load [\d.]+ s \(\d+ matches\)", table), table
    cpu = re.search(r"\| CPU per webhook, one thread, WSGI called directly +\| bare Flask (\d+) µs; reactor without "
                    r"its commit (\d+) µs \([\d.]+x\); reactor (\d+) µs", table)
    assert cpu and all(int(us) > 0 for us in cpu.groups()), table
