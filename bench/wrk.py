"""Load with wrk (C, not Python) from a Lua script that walks pre-signed, distinct deliveries."""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

from reactor.signature import sign

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def write_script(path: Path, secret: str, count: int, topic: str = "Town Hall bench") -> Path:
    """A wrk script with `count` distinct signed meeting.started deliveries; threads start apart."""
    ts = str(int(time.time()))
    rows = []
    for n in range(count):
        body = json.dumps({"event": "meeting.started", "event_ts": int(time.time() * 1000),
                           "payload": {"account_id": "bench", "object": {
                               "id": str(80_000_000_000 + n), "uuid": uuid.uuid4().hex, "host_id": f"host{n % 50}",
                               "topic": topic, "type": 2, "duration": 60}}}, separators=(",", ":"))
        rows.append(f'{{"{ts}","{sign(secret, ts, body.encode())}",[==[{body}]==]}}')
    path.write_text(
        "local reqs = {\n" + ",\n".join(rows) + "\n}\n"
        "local n = 0\n"
        "function setup(thread) thread:set('offset', n * 7919); n = n + 1 end\n"
        "local i = 0\n"
        "function request()\n"
        "  i = i + 1\n"
        "  local r = reqs[((i + offset) % #reqs) + 1]\n"
        "  return wrk.format('POST', '/webhooks/zoom', {['content-type'] = 'application/json; charset=utf-8',\n"
        "    ['x-zm-request-timestamp'] = r[1], ['x-zm-signature'] = r[2]}, r[3])\n"
        "end\n")
    return path


def run(url: str, script: Path, seconds: int = 10, connections: int = 32, threads: int = 2) -> dict:
    """requests/s, p50 and p99 latency (ms) and the non-2xx count of one wrk run."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url + "/webhooks/zoom"], capture_output=True, text=True, timeout=seconds + 60).stdout
    latency = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)]
               for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency.get("50"), "p99": latency.get("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}
