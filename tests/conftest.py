"""Shared test fixtures: a real gunicorn serving reactor, a real Zoom stand-in, signed posts."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from reactor.signature import sign
from reactor.store import open_store
from tests.zoom_standin import ZoomStandIn

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-webhook-secret-7f3a9c"
CLIENT_SECRET = "test-client-secret-b81e44"
STREAM_KEY = "test-stream-key-d2c6a1"
ACCOUNT_ID = "Wk9PTV9BQ0NPVU5UX0lE"  # the Zoom account of event() and the samples, and the stand-in's ZOOM_ACCOUNT_ID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signed_headers(raw: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"content-type": "application/json; charset=utf-8", "x-zm-request-timestamp": ts,
            "x-zm-signature": sign(secret, ts, raw)}


def event(name: str = "meeting.started", meeting_id="85746065432", topic="Town Hall - November",
          uuid_: str | None = None, ts_ms: int | None = None, **object_fields) -> dict:
    obj = {"id": meeting_id, "uuid": uuid_ or uuid.uuid4().hex, "host_id": "x1yCzABCDEfg23HiJKl4mN",
           "host_email": "host@example.com", "topic": topic, "type": 2,
           "start_time": "2026-11-26T17:00:05Z", "timezone": "UTC", "duration": 60}
    obj.update(object_fields)
    return {"event": name, "event_ts": ts_ms if ts_ms is not None else int(time.time() * 1000),
            "payload": {"account_id": ACCOUNT_ID, "object": obj}}


class ReactorServer:
    """reactor under a real gunicorn, started as the Procfile starts it."""

    def __init__(self, tmp: Path, rules: str | None = None, env: dict | None = None, zoom: ZoomStandIn | None = None,
                 app: str = "reactor:create_app()"):
        self.tmp = tmp
        self.app = app
        self.db = tmp / "reactor.db"
        self.rules_dir = tmp / "rules"
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        if rules is not None:
            (self.rules_dir / "rules.yaml").write_text(rules)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        self.env = {
            "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
            "PORT": str(self.port), "WEB_CONCURRENCY": "2", "ZOOM_WEBHOOK_SECRET_TOKEN": SECRET,
            "DATABASE_URL": f"sqlite:///{self.db}", "REACTOR_RULES": str(self.rules_dir),
            "PYTHONPATH": str(ROOT), "YOUTUBE_STREAM_KEY": STREAM_KEY,
        }
        if zoom is not None:
            self.env.update({"ZOOM_API_URL": zoom.url + "/v2", "ZOOM_OAUTH_URL": zoom.url + "/oauth/token",
                             "ZOOM_ACCOUNT_ID": ACCOUNT_ID, "ZOOM_CLIENT_ID": "test-client-id",
                             "ZOOM_CLIENT_SECRET": CLIENT_SECRET})
        else:
            self.env["REACTOR_DRY_RUN"] = "1"
        self.env.update(env or {})
        self.env = {k: v for k, v in self.env.items() if v is not None}  # None: leave the variable unset
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.wrapper: list[str] = []  # a command to start gunicorn under, e.g. unshare for a PID namespace

    def start(self, wait: bool = True) -> "ReactorServer":
        self._log = open(self.log_path, "ab")
        gunicorn = shutil.which("gunicorn", path=self.env["PATH"]) or str(Path(sys.executable).parent / "gunicorn")
        self.proc = subprocess.Popen(
            [*self.wrapper, gunicorn, "-c", "python:reactor.gunicorn_conf", "--bind", f"127.0.0.1:{self.port}",
             self.app],
            cwd=self.tmp, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"reactor did not become ready:\n{self.logs()}")

    def post(self, body, secret: str = SECRET, timestamp: int | None = None, headers: dict | None = None,
             raw: bytes | None = None) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        h = signed_headers(data, secret, timestamp)
        h.update(headers or {})
        return requests.post(self.url + "/webhooks/zoom", data=data, headers=h, timeout=10)

    def kill9(self) -> None:
        """SIGKILL the master and every worker at once: a crash, no goodbye."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_group(self.proc, 15)
        if self._log:
            self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def store(self):
        """The store this server uses, opened from its DATABASE_URL."""
        return open_store(self.env["DATABASE_URL"])

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until every delivery acknowledged so far has been ingested (the inbox is empty), or timeout."""
        store = self.store()
        try:
            deadline = time.time() + timeout
            while store.inbox_backlog() and time.time() < deadline:
                time.sleep(0.02)
        finally:
            store.close()

    def history(self, settle: bool = True, **filters) -> list[dict]:
        """The history as `history` shows it, once what was acknowledged is ingested (settle=False: as it is)."""
        if settle:
            self.settle()
        store = self.store()
        try:
            return store.history(**filters)
        finally:
            store.close()

    def outcome(self, answer: requests.Response) -> dict:
        """What became of the delivery a 200 numbered, once ingested: {"status": "accepted" or "duplicate",
        "delivery": the stored delivery's id (a duplicate's: the first's), "actions": the actions it planned}."""
        assert answer.status_code == 200, answer.text
        seq = answer.json()["delivery"]
        store = self.store()

        def ingested():
            found = store.delivery(seq)
            return None if found is None or found.get("inbox") else found

        try:
            found = wait_until(ingested)
        finally:
            store.close()
        if "duplicate" in found:
            return {"status": "duplicate", "delivery": found["id"], "actions": 0}
        return {"status": "accepted", "delivery": found["id"], "actions": len(found["jobs"])}

    def jobs(self) -> list[dict]:
        return [j for d in self.history(limit=100000) for j in d["jobs"]]

    def wait_jobs(self, done: int, statuses=("done", "dead", "skipped"), timeout: float = 20.0) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            jobs = self.jobs()
            if sum(j["status"] in statuses for j in jobs) >= done:
                return jobs
            time.sleep(0.05)
        raise AssertionError(f"expected {done} finished jobs, have {[(j['id'], j['status']) for j in self.jobs()]}")


def stop_group(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM a process started in its own session and everything it started; SIGKILL after `grace` s."""
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_until(predicate, timeout: float = 15.0, every: float = 0.05):
    """Poll `predicate` until it returns something truthy, and return that; fail after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (value := predicate()):
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def log_records(server) -> list[dict]:
    """reactor's JSON log lines, parsed (each worker logs its own; gunicorn's own lines are not JSON)."""
    records = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def log_lines(server, msg: str) -> list[dict]:
    """reactor's JSON log lines with this message."""
    return [record for record in log_records(server) if record.get("msg") == msg]


def run_cli(*args, env=None):
    """`python -m reactor ARGS` from the project's root, with this environment plus `env`."""
    return subprocess.run([sys.executable, "-m", "reactor", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=60)


class Worker:
    """`python -m reactor worker`, as the Procfile's worker: line runs it."""

    def __init__(self, server, env: dict | None = None):
        self.log = open(server.tmp / "worker.log", "ab")
        env = {k: v for k, v in {**server.env, **(env or {})}.items() if k != "ZOOM_WEBHOOK_SECRET_TOKEN"}
        self.proc = subprocess.Popen([sys.executable, "-m", "reactor", "worker"], cwd=server.tmp, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.log.close()


TOWN_HALL_RULES = """
rules:
  - name: Stream town halls
    on: [meeting.started, webinar.started]
    when:
      topic: {glob: "Town Hall*"}
    do:
      - livestream.start:
          display_name: "Live: {{ topic }}"
          active_speaker_name: false
  - name: Stop town halls
    on: meeting.ended
    when:
      topic: {glob: "Town Hall*"}
    do: [livestream.stop]
"""


@pytest.fixture
def zoom():
    standin = ZoomStandIn()
    yield standin
    standin.close()


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(rules: str | None = TOWN_HALL_RULES, env: dict | None = None, zoom=None, start=True, sub="") -> ReactorServer:
        folder = tmp_path / sub if sub else tmp_path
        folder.mkdir(exist_ok=True)
        server = ReactorServer(folder, rules, env, zoom)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()
