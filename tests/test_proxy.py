"""The shipped proxy (the top-level Caddyfile, as compose.yaml runs it) in front of a real gunicorn reactor.

One client holds 500 connections sending their headers a line a second and 500 sending their body a byte a
second, reopening each one the server closes. Through the proxy, signed webhooks sent meanwhile are each
answered within 1 s and all stored; straight at gunicorn (2 workers x 8 threads, as the Procfile starts it)
they are not: the README's table. Caddy is Debian's package (`apt-get install -y caddy`, 2.6.2, the version
compose.yaml pins); without it these tests skip (.ci/run installs it).

`python -m tests.test_proxy gunicorn|proxy HEADERS BODIES [gunicorn options]` prints one row of the README's table.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from reactor.web import MAX_BODY
from tests.conftest import ROOT, ReactorServer, event, free_port, signed_headers, stop_group

CADDYFILE = ROOT / "Caddyfile"
CADDY = shutil.which("caddy")
needs_caddy = pytest.mark.skipif(CADDY is None, reason="caddy is not installed: apt-get install -y caddy")
ANSWER_WITHIN = 1.0  # seconds: each webhook through the proxy; Zoom's own deadline is 3 s


def raise_open_files(wanted: int = 8192) -> None:
    """1,000 slow connections are 1,000 descriptors here (and as many in the server): lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Caddy:
    """The Debian caddy running the repository's Caddyfile unchanged: only its environment differs from
    compose's (a plain-http site on 127.0.0.1 instead of a domain, no admin endpoint, the test's gunicorn)."""

    def __init__(self, tmp: Path, upstream: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"caddy-{self.port}.log"
        home = tmp / "caddy-home"
        home.mkdir(exist_ok=True)
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "XDG_DATA_HOME": str(home),
                    "XDG_CONFIG_HOME": str(home), "REACTOR_DOMAIN": self.url, "REACTOR_UPSTREAM": upstream,
                    "CADDY_ADMIN": "off", "CADDY_BIND": "127.0.0.1"}
        self.proc: subprocess.Popen | None = None
        self.start_path = "/readyz"  # answered 200 through the proxy once it is up

    def start(self) -> "Caddy":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([CADDY, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"caddy exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + self.start_path, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"caddy did not pass {self.start_path} through:\n{self.logs()}")

    def stop(self) -> None:
        stop_group(self.proc, 10)
        self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


# -- the attack: one client, many slow connections -----------------------------------------------------------


class SlowClients:
    """`headers` connections sending a header line every `pause` s (never the blank line that ends them) and
    `bodies` sending a complete head, then their 64 KiB body a byte every `pause` s; each one the server closes
    is opened again, until stop(). Runs its own event loop in a thread."""

    def __init__(self, port: int, headers: int = 500, bodies: int = 500, pause: float = 1.0):
        self.port, self.headers, self.bodies, self.pause = port, headers, bodies, pause
        self.open_now = self.peak = self.opened = self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> "SlowClients":
        raise_open_files()
        self._thread.start()
        deadline = time.time() + 30
        while self.peak < (self.headers + self.bodies) * 0.95 and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _main(self) -> None:
        tasks = [asyncio.create_task(self._one(body=n >= self.headers, n=n)) for n in range(self.headers + self.bodies)]
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, body: bool, n: int) -> None:
        await asyncio.sleep(n * 0.002)  # spread the connects over ~2 s, as a real flood ramps up
        head = f"POST /webhooks/zoom HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\ncontent-type: application/json\r\n"
        if body:
            head += "content-length: 65536\r\nx-zm-request-timestamp: 1\r\nx-zm-signature: v0=00\r\n\r\n{"
        while not self._stop.is_set():
            writer = None
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                self.opened += 1
                self.open_now += 1
                self.peak = max(self.peak, self.open_now)
                try:
                    writer.write(head.encode())
                    await writer.drain()
                    k = 0
                    while not self._stop.is_set():
                        try:
                            await asyncio.wait_for(reader.read(1024), timeout=self.pause)
                            break  # the server answered or closed: this one is over
                        except asyncio.TimeoutError:
                            pass
                        k += 1
                        writer.write(b" " if body else f"x-slow-{k}: {k}\r\n".encode())
                        await writer.drain()
                    else:
                        return
                    self.closed_by_server += 1
                finally:
                    self.open_now -= 1
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.1)
            finally:
                if writer is not None:
                    writer.close()


@dataclass(frozen=True)
class Probe:
    """Signed webhooks sent one at a time while the attack runs: how long each took, what each got."""

    sent: list[str]          # meeting ids
    seconds: list[float]     # per webhook; a webhook without an answer counts its timeout
    statuses: list[int | str]

    @property
    def answered_in_time(self) -> int:
        return sum(1 for s, t in zip(self.statuses, self.seconds) if s == 200 and t <= ANSWER_WITHIN)

    def describe(self) -> str:
        return ", ".join(f"{s} in {t:.2f} s" for s, t in zip(self.statuses, self.seconds))


def probe(url: str, count: int, every: float, timeout: float, first_id: int) -> Probe:
    """`count` signed webhooks to `url`, one every `every` s, each on a new connection (as Zoom posts)."""
    sent, seconds, statuses = [], [], []
    t0 = time.time()
    for n in range(count):
        due = t0 + n * every
        if due > time.time():
            time.sleep(due - time.time())
        mid = str(first_id + n)
        raw = json.dumps(event(meeting_id=mid, topic="Town Hall - slow clients")).encode()
        started = time.time()
        try:
            status = requests.post(url + "/webhooks/zoom", data=raw, headers=signed_headers(raw), timeout=timeout,
                                   ).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        sent.append(mid)
        seconds.append(time.time() - started)
        statuses.append(status)
    return Probe(sent, seconds, statuses)


def stored_meetings(server: ReactorServer) -> set[str]:
    return {d["body"]["payload"]["object"]["id"] for d in server.history(limit=100_000)}


# -- the tests --------------------------------------------------------------------------------------------


@needs_caddy
def test_compose_runs_this_caddy_and_the_caddyfile_adapts_to_https_for_the_domain(tmp_path):
    """What compose.yaml's caddy service loads: the same version as here, https for REACTOR_DOMAIN on every
    interface, in front of the web service, with the timeouts and the buffering the attack test relies on."""
    import yaml

    image = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["caddy"]["image"]
    here = subprocess.run([CADDY, "version"], capture_output=True, text=True, timeout=30).stdout.split()[0]
    assert image.split(":")[1].split("-")[0] == here.removeprefix("v"), (image, here)
    out = subprocess.run([CADDY, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"], capture_output=True,
                         text=True, timeout=30, env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
                                                     "REACTOR_DOMAIN": "reactor.example.com"})
    assert out.returncode == 0, out.stderr
    server = json.loads(out.stdout)["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == ["0.0.0.0:443"]
    assert "automatic_https" not in server  # certificates and the http -> https redirect: Caddy's defaults
    assert (server["read_header_timeout"], server["read_timeout"]) == (5e9, 10e9)
    route = server["routes"][0]
    assert route["match"] == [{"host": ["reactor.example.com"]}]
    limit, proxy = route["handle"][0]["routes"][0]["handle"]
    assert limit == {"handler": "request_body", "max_size": MAX_BODY}  # reactor's own limit, refused before gunicorn
    assert proxy["buffer_requests"] is True and proxy["upstreams"] == [{"dial": "web:8000"}]


@pytest.fixture
def reactor_and_proxy(make_server, tmp_path):
    server = make_server()  # 2 workers x 8 threads: the Procfile's gunicorn, as compose's web service runs it
    caddy = Caddy(tmp_path, f"127.0.0.1:{server.port}").start()
    yield server, caddy
    caddy.stop()


@needs_caddy
def test_slow_clients_cannot_starve_webhooks_through_the_proxy_but_do_straight_at_gunicorn(reactor_and_proxy):
    server, caddy = reactor_and_proxy
    # Through the proxy: 20 webhooks over ~19 s, across the moments Caddy cuts the slow headers (5 s) and the
    # slow bodies (10 s) and the client opens them all again.
    with SlowClients(caddy.port) as attack:
        through = probe(caddy.url, count=20, every=1.0, timeout=10, first_id=50_000_000_000)
    assert attack.peak >= 950, f"the attack held only {attack.peak} connections at once"
    assert attack.closed_by_server >= 900, f"Caddy cut only {attack.closed_by_server} slow connections"
    assert through.answered_in_time == 20, f"through the proxy: {through.describe()}\n{caddy.logs()}"
    assert stored_meetings(server) >= set(through.sent)

    # The same attack straight at gunicorn: the threads are held by the slow clients, the webhooks wait.
    with SlowClients(server.port) as attack:
        straight = probe(server.url, count=5, every=0.5, timeout=3, first_id=51_000_000_000)
    assert attack.peak >= 950, f"the attack held only {attack.peak} connections at once"
    assert straight.answered_in_time <= 1, f"straight at gunicorn: {straight.describe()}"

    # Once the client is gone, gunicorn answers again (nothing was broken, only starved).
    again = probe(server.url, count=3, every=0.2, timeout=10, first_id=52_000_000_000)
    assert again.answered_in_time == 3, again.describe()


def peer_app():
    """A probe served by the shipped gunicorn_conf (its trust list and middleware): what address and scheme a
    request is seen with. reactor itself shows neither; the console and the logs will."""
    from flask import Flask, jsonify, request

    app = Flask(__name__)
    app.get("/peer")(lambda: jsonify({"remote": request.remote_addr, "scheme": request.scheme}))
    return app


def seen_as(port: int, source: str, headers: dict) -> dict:
    """GET /peer on 127.0.0.1:`port` from the local address `source`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/peer", headers=headers)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


SPOOFED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


@needs_caddy
def test_forwarded_headers_are_believed_only_from_the_proxy(tmp_path):
    """gunicorn and caddy on 127.0.0.1 (the default FORWARDED_ALLOW_IPS); the client on 127.0.0.2, another
    loopback address, so that it is not the proxy."""
    server = ReactorServer(tmp_path, app="tests.test_proxy:peer_app()", env={"FORWARDED_ALLOW_IPS": None})
    server.start(wait=False)
    caddy = None
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                seen_as(server.port, "127.0.0.1", {})
                break
            except OSError:
                time.sleep(0.05)
        caddy = Caddy(tmp_path, f"127.0.0.1:{server.port}")
        caddy.start_path = "/peer"
        caddy.start()
        # straight at gunicorn, a client's claims are ignored
        assert seen_as(server.port, "127.0.0.2", SPOOFED) == {"remote": "127.0.0.2", "scheme": "http"}
        # through the proxy: the proxy replaces the client's X-Forwarded-For with the address it saw, and says
        # http, the scheme of this test's listener (https in compose)
        assert seen_as(caddy.port, "127.0.0.2", SPOOFED) == {"remote": "127.0.0.2", "scheme": "http"}
        # and what the proxy says is believed: a request from the proxy's address with these headers
        assert seen_as(server.port, "127.0.0.1", SPOOFED) == {"remote": "203.0.113.9", "scheme": "https"}
    finally:
        if caddy is not None:
            caddy.stop()
        server.stop()


def test_the_bench_row_through_the_proxy_is_refused_on_any_answer_but_a_2xx():
    from bench import wrk
    from bench.run import PROXIED, Run, proxy_rows

    def result(statuses: dict, timeouts: int = 0) -> wrk.Result:
        errors = {"connect": 0, "read": 0, "write": 0, "timeout": timeouts}
        return wrk.Result(statuses=statuses, socket_errors=errors, seconds=8.0, p50=10.0, p99=30.0)

    good = [Run(PROXIED[0], result({200: 4000})), Run(PROXIED[1], result({200: 3000}))]
    assert "0.75x of straight to gunicorn" in proxy_rows(good)[0][1]
    for bad in (result({200: 3000, 502: 1}), result({200: 3000}, timeouts=2)):
        value = proxy_rows([good[0], Run(PROXIED[1], bad)])[0][1]
        assert value.startswith("REFUSED: through the proxy:") and "2xx/s =" not in value, value


def measure(target: str, headers: int, bodies: int, gunicorn_args: str = "", tries: int = 5) -> str:
    """One row of the README's table: `tries` webhooks, 1 s apart, while one client holds the slow connections."""
    import tempfile

    from tests.conftest import TOWN_HALL_RULES

    with tempfile.TemporaryDirectory(prefix="reactor-slow-") as folder:
        tmp = Path(folder)
        server = ReactorServer(tmp, TOWN_HALL_RULES, env={"GUNICORN_CMD_ARGS": gunicorn_args or None}).start()
        caddy = Caddy(tmp, f"127.0.0.1:{server.port}").start() if target == "proxy" else None
        try:
            port, url = (caddy.port, caddy.url) if caddy else (server.port, server.url)
            with SlowClients(port, headers, bodies) as attack:
                result = probe(url, count=tries, every=1.0, timeout=10, first_id=53_000_000_000)
            stored = len(stored_meetings(server) & set(result.sent))
        finally:
            if caddy:
                caddy.stop()
            server.stop()
    fast = [t for s, t in zip(result.statuses, result.seconds) if s == 200]
    timing = f", {min(fast) * 1000:.0f}-{max(fast) * 1000:.0f} ms" if fast else ""
    return (f"| {target} {gunicorn_args} | {headers} slow-header + {bodies} slow-body (peak {attack.peak} open) | "
            f"{result.answered_in_time} of {tries} within 1 s{timing}; {stored} stored | {result.describe()} |")


if __name__ == "__main__":  # python -m tests.test_proxy TARGET HEADERS BODIES [GUNICORN_CMD_ARGS]
    print(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), " ".join(sys.argv[4:])), flush=True)
