"""Load with wrk (C, not Python) from a Lua script that walks signed, distinct deliveries.

wrk's own `Requests/sec` counts every answer, 401s and 503s included; the script counts the answers
by status itself, so that a row reports 2xx per second and can be refused when anything else came back.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from reactor.signature import sign
from tests.conftest import ACCOUNT_ID

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Result:
    """One wrk run: the answers by status, unanswered requests, and the latency of the answers."""

    statuses: dict = field(default_factory=dict)  # HTTP status -> answers
    socket_errors: dict = field(default_factory=dict)  # connect/read/write/timeout -> count
    seconds: float = 0.0
    p50: float | None = None  # ms, over every answer
    p99: float | None = None

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def not_ok(self) -> dict:
        """Every answer that was not a 2xx, by status, and every request without an answer, by kind."""
        bad = {str(status): count for status, count in sorted(self.statuses.items()) if not 200 <= status < 300}
        bad.update({kind: count for kind, count in self.socket_errors.items() if count})
        return bad

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def deliveries(count: int, topic: str = "Town Hall bench", hosts: int = 50, account_id: str = ACCOUNT_ID) -> list[bytes]:
    """`count` distinct meeting.started bodies: one meeting each, hosts host-0 .. host-{hosts-1} in turn, of
    the Zoom account the bench's reactors are configured with (another account's would plan no call)."""
    now_ms = int(time.time() * 1000)
    return [json.dumps({"event": "meeting.started", "event_ts": now_ms,
                        "payload": {"account_id": account_id, "object": {
                            "id": str(80_000_000_000 + n), "uuid": uuid.uuid4().hex, "host_id": f"host-{n % hosts}",
                            "topic": topic, "type": 2, "duration": 60}}}, separators=(",", ":")).encode()
            for n in range(count)]


def write_script(path: Path, secret: str, bodies: list[bytes]) -> Path:
    """A wrk script sending `bodies`, each signed now (sign again for every run: the signature window is
    300 s). Each wrk thread walks its own share, so no body is sent twice before all were sent once."""
    ts = str(int(time.time()))
    rows = [f'{{"{ts}","{sign(secret, ts, body)}",[==[{body.decode()}]==]}}' for body in bodies]
    path.write_text(
        "local reqs = {\n" + ",\n".join(rows) + "\n}\n"
        "local threads = {}\n"
        "function setup(thread)\n"
        "  thread:set('share', #threads); table.insert(threads, thread)\n"
        "end\n"
        "function init(args) statuses = {}; i = 0; stride = tonumber(args[1]) end\n"
        "function request()\n"
        "  local r = reqs[((i * stride + share) % #reqs) + 1]\n"
        "  i = i + 1\n"
        "  return wrk.format('POST', '/webhooks/zoom', {['content-type'] = 'application/json; charset=utf-8',\n"
        "    ['x-zm-request-timestamp'] = r[1], ['x-zm-signature'] = r[2]}, r[3])\n"
        "end\n"
        "function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end\n"
        "function done(summary, latency, requests)\n"
        "  local total = {}\n"
        "  for _, thread in ipairs(threads) do\n"
        "    for status, n in pairs(thread:get('statuses')) do total[status] = (total[status] or 0) + n end\n"
        "  end\n"
        "  io.write('BENCH statuses')\n"
        "  for status, n in pairs(total) do io.write(string.format(' %d=%d', status, n)) end\n"
        "  local e = summary.errors\n"
        "  io.write(string.format('\\nBENCH duration_us=%d connect=%d read=%d write=%d timeout=%d\\n',\n"
        "    summary.duration, e.connect, e.read, e.write, e.timeout))\n"
        "end\n")
    return path


def run(url: str, script: Path, seconds: int = 10, connections: int = 32, threads: int = 2) -> Result:
    """One wrk run against reactor's webhook path."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url + "/webhooks/zoom", "--", str(threads)], capture_output=True, text=True, timeout=seconds + 60)
    return parse(out.stdout, out.stderr)


def parse(stdout: str, stderr: str = "") -> Result:
    """A Result from the output of wrk running a script of write_script's."""
    statuses = re.search(r"^BENCH statuses(.*)$", stdout, re.M)
    totals = re.search(r"^BENCH duration_us=(\d+) connect=(\d+) read=(\d+) write=(\d+) timeout=(\d+)$", stdout, re.M)
    if (not statuses or not totals) and "unable to connect" in stdout + stderr:
        return Result(socket_errors={"connect": 1})  # nothing listened: a row refused, not a bench that stops
    if not statuses or not totals:
        raise RuntimeError(f"wrk printed no status counts (is the script one of write_script's?):\n{stdout}{stderr}")
    latency = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)]
               for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", stdout, re.M)}
    counts = {int(status): int(n) for status, n in re.findall(r"(\d+)=(\d+)", statuses.group(1))}
    errors = dict(zip(("connect", "read", "write", "timeout"), map(int, totals.groups()[1:])))
    return Result(statuses=counts, socket_errors=errors, seconds=int(totals.group(1)) / 1e6,
                  p50=latency.get("50"), p99=latency.get("99"))
