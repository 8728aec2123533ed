"""Start-up, configuration errors, rule reloads and the command line, as an operator meets them."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import requests

from tests.conftest import ROOT, SECRET, TOWN_HALL_RULES, Worker, event, free_port, log_lines, wait_until


def start_fails(make_server, rules=TOWN_HALL_RULES, env=None) -> str:
    server = make_server(rules, env=env, start=False)
    server.start(wait=False)
    code = server.proc.wait(30)
    assert code != 0
    return server.logs()


def test_missing_webhook_secret_stops_start_up_and_says_where_it_comes_from(make_server):
    out = start_fails(make_server, env={"ZOOM_WEBHOOK_SECRET_TOKEN": ""})
    assert "ZOOM_WEBHOOK_SECRET_TOKEN is not set" in out and "Secret Token" in out
    assert "Traceback" not in out


def test_missing_credentials_without_dry_run_stop_start_up(make_server):
    out = start_fails(make_server, env={"REACTOR_DRY_RUN": "0"})
    assert "ZOOM_ACCOUNT_ID is not set" in out and "REACTOR_DRY_RUN=1" in out


def test_preload_stops_start_up_and_says_to_drop_it(make_server):
    """gunicorn's --preload (a common tip, often in GUNICORN_CMD_ARGS) made the app in the master: its workers
    answered 200 and queued deliveries for an ingester thread the fork had not carried, so nothing acted."""
    out = start_fails(make_server, env={"GUNICORN_CMD_ARGS": "--preload"})
    assert "reactor cannot start with --preload" in out and "drop --preload" in out
    assert "Traceback" not in out


def test_invalid_rules_at_start_up_name_the_file(make_server):
    out = start_fails(make_server, rules="rules:\n  - name: x\n    on: meeting.started\n    when: {topic: {globb: a}}\n"
                                         "    do: [livestream.stop]\n")
    assert "rules.yaml:4: rule \"x\": topic: unknown matcher 'globb' (did you mean 'glob'?)" in out


def ready(server) -> dict:
    return requests.get(server.url + "/readyz", timeout=5).json()


def matched_rules(server, topic: str) -> list[str]:
    response = server.post(event(topic=topic))
    assert response.status_code == 200
    [delivery] = [d for d in server.history(limit=1000) if d["id"] == response.json()["delivery"]]
    return [v["rule"] for v in delivery["verdicts"] if v["matched"]]


NEW_RULES = TOWN_HALL_RULES + """
  - name: Board meetings
    on: meeting.started
    when: {topic: {glob: "Board*"}}
    do: [livestream.start]
"""


def test_editing_rule_files_reloads_them_and_invalid_edits_keep_the_old_set(make_server):
    server = make_server()  # two workers: each reloads on its own and says so in the log
    [started] = {line["version"] for line in log_lines(server, "reactor ready")}
    rules_file = server.rules_dir / "rules.yaml"
    rules_file.write_text(NEW_RULES)
    wait_until(lambda: len(log_lines(server, "rules reloaded")) == 2)
    [good] = {(line["version"], line["rules"]) for line in log_lines(server, "rules reloaded")}
    assert good[0] != started and good[1] == 3
    assert all(matched_rules(server, "Board Q4") == ["Board meetings"] for _ in range(4))

    rules_file.write_text(NEW_RULES.replace("glob:", "globb:"))
    rejected = "rules reload rejected; the previous rules stay active"
    wait_until(lambda: len(log_lines(server, rejected)) == 2)
    assert all("globb" in " ".join(line["problems"]) and line["active_version"] == good[0]
               for line in log_lines(server, rejected))
    assert all(matched_rules(server, "Board Q4") == ["Board meetings"] for _ in range(4))


def test_sighup_revalidates_and_keeps_the_old_rules_when_invalid(make_server):
    server = make_server(env={"WEB_CONCURRENCY": "1"})
    rules_file = server.rules_dir / "rules.yaml"
    rules_file.write_text("rules: [")
    os.kill(server.proc.pid, signal.SIGHUP)
    wait_until(lambda: "the new rules are invalid; workers keep the previous rules" in server.logs())
    server.wait_ready()
    assert server.proc.poll() is None
    assert ready(server) == {"status": "ready"}
    assert matched_rules(server, "Town Hall") == ["Stream town halls"]


def test_send_posts_a_signed_sample_that_is_recorded(make_server):
    server = make_server()
    result = subprocess.run([sys.executable, "-m", "reactor", "send", "meeting.started", "--topic", "Town Hall",
                             "--url", server.url + "/webhooks/zoom"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "ZOOM_WEBHOOK_SECRET_TOKEN": SECRET}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("200 ") and '"status":"accepted"' in result.stdout
    [delivery] = server.history()
    assert delivery["body"]["payload"]["object"]["topic"] == "Town Hall"
    assert delivery["jobs"][0]["action"]["kind"] == "livestream.start"


def test_send_url_validation_sample(make_server):
    server = make_server()
    result = subprocess.run([sys.executable, "-m", "reactor", "send", "endpoint.url_validation",
                             "--url", server.url + "/webhooks/zoom"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "ZOOM_WEBHOOK_SECRET_TOKEN": SECRET}, timeout=30)
    assert result.returncode == 0 and "encryptedToken" in result.stdout


def test_dev_server_and_send_work_without_any_set_up(tmp_path):
    """What `make run` does: local secret, dry run, and `send` needing nothing more."""
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PORT": str(port), "HOME": str(tmp_path)}
    dev = subprocess.Popen([sys.executable, "-m", "reactor", "dev"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, timeout=30)
        send = subprocess.run([sys.executable, "-m", "reactor", "send", "meeting.started", "--topic", "Town Hall"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
        assert send.returncode == 0, send.stdout + send.stderr
        assert '"status":"accepted"' in send.stdout
        history = subprocess.run([sys.executable, "-m", "reactor", "history"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=30)
        assert "matched  Stream town halls" in history.stdout
        assert "dry run: not sent" in history.stdout or "pending" in history.stdout
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        out = dev.communicate(timeout=30)[0].decode()
    assert "DRY RUN" in out and f"{sys.executable} -m reactor send meeting.started" in out


def _get(url):
    try:
        return requests.get(url, timeout=1).status_code
    except requests.RequestException:
        return None


def test_enc_and_env_secrets_reach_zoom_but_nothing_else(make_server, zoom):
    from reactor.secrets import encrypt, keygen
    key = keygen()
    sealed = encrypt("sealed-stream-key-9f1e", key)
    rules = f"""
rules:
  - name: Sealed
    on: meeting.started
    do:
      - livestream.configure:
          stream_url: rtmp://x/live
          stream_key: "{sealed}"
          page_url: https://x/live
      - livestream.start: {{display_name: "{{{{ topic }}}}"}}
"""
    server = make_server(rules, zoom=zoom, env={"REACTOR_SECRET_KEY": key})
    server.post(event(meeting_id="900", topic="${ZOOM_CLIENT_SECRET}"))
    configure, start = zoom.wait_for(2)
    assert configure.body["stream_key"] == "sealed-stream-key-9f1e"
    assert start.body["settings"]["display_name"] == "${ZOOM_CLIENT_SECRET}", "event text is never resolved"
    server.wait_jobs(2)
    explain = subprocess.run([sys.executable, "-m", "reactor", "explain", "meeting.started", "--rules",
                              str(server.rules_dir)], capture_output=True, text=True, cwd=ROOT, timeout=30,
                             env={**os.environ, "REACTOR_SECRET_KEY": key})
    assert "<secret enc:...>" in explain.stdout
    server.stop()
    seen = server.logs() + json.dumps(server.history()) + explain.stdout + explain.stderr
    assert "sealed-stream-key-9f1e" not in seen and "sealed-stream-key-9f1e" not in server.db.read_bytes().decode("latin-1")


def test_retry_requeues_dead_actions(make_server, zoom):
    from tests.zoom_standin import Reply
    zoom.script("/v2/meetings/950/", [Reply(404, {"code": 1001, "message": "User does not exist"})])
    server = make_server(zoom=zoom)
    server.post(event(meeting_id="950", topic="Town Hall"))
    [job] = server.wait_jobs(1)
    assert job["status"] == "dead"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{server.db}"}
    dead = subprocess.run([sys.executable, "-m", "reactor", "history", "--status", "dead"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=30)
    assert "code 1001: Zoom answered 404 code 1001: User does not exist" in dead.stdout
    result = subprocess.run([sys.executable, "-m", "reactor", "retry", str(job["id"])], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=30)
    assert result.returncode == 0 and "re-queued 1" in result.stdout
    wait_until(lambda: server.jobs()[0]["status"] == "done")
    assert len(zoom.api_calls()) == 2


def test_dispatch_off_leaves_the_calls_to_the_worker(make_server, zoom):
    server = make_server(zoom=zoom, env={"REACTOR_DISPATCH": "off"})
    server.post(event(meeting_id="1300", topic="Town Hall"))
    time.sleep(1.5)
    assert zoom.api_calls() == [], "the web process does not dispatch"
    worker = Worker(server)
    try:
        zoom.wait_for(1)
        assert server.wait_jobs(1)[0]["status"] == "done"
    finally:
        worker.stop()
    assert '"msg": "attempt"' not in server.logs()
    assert '"msg": "attempt"' in (server.tmp / "worker.log").read_text()


def test_a_deploy_s_sigterm_lets_the_call_in_flight_finish_and_zoom_gets_it_once(make_server, zoom):
    """A deploy stops a web process (SIGTERM) while its dispatcher is in a call that Zoom answers after 3 s.
    The process finishes the call and records it before it exits, so the worker that carries on has
    nothing to send again. Before, the web process stopped only its ingester: the call was cut off with
    the process, its lease stayed held, and 10 s later the worker took the silent process's job and
    Zoom got the start twice."""
    from tests.zoom_standin import Reply

    zoom.script("/v2/meetings/67000000001/livestream/status", [Reply(204, delay=3)])
    server = make_server(rules=TOWN_HALL_RULES, zoom=zoom, env={"WEB_CONCURRENCY": "1"})
    assert server.post(event(meeting_id="67000000001", topic="Town Hall")).status_code == 200
    zoom.wait_for(1, timeout=20)  # the web process's dispatcher is in the call
    worker = Worker(server)
    try:
        server.stop()  # SIGTERM, as a PaaS stops a dyno
        assert server.proc.returncode == 0
        time.sleep(14)  # past the 10 s a silent process's leases wait before another process takes them
        calls = [c.path for c in zoom.api_calls("/v2/meetings/67000000001/")]
        assert calls == ["/v2/meetings/67000000001/livestream/status"], f"Zoom got: {calls}"
        [delivery] = server.history(settle=False)
        assert [job["status"] for job in delivery["jobs"]] == ["done"], delivery
    finally:
        worker.stop()
