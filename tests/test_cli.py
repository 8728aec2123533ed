"""The command line as a user meets it: `pip install .`, then `reactor …` from a folder of their own."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from reactor.retry_policy import LATE
from tests.conftest import ACCOUNT_ID, free_port
from tests.installed import installed_bin, reactor, reactor_env

RULES = """
rules:
  - name: Town hall live
    on: meeting.started
    when:
      topic: {glob: "Town Hall*"}
    do:
      - livestream.configure:
          stream_url: rtmp://a.rtmp.youtube.com/live2
          stream_key: ${YOUTUBE_STREAM_KEY}
          page_url: https://youtube.com/@acme/live
      - livestream.start:
          display_name: "Live: {{ topic }}"
  - name: Webinar stop
    on: webinar.ended
    do: [livestream.stop]
    examples:
      - event: webinar.ended
        expect: match
      - event: webinar.started
        expect: no match
"""


@pytest.fixture
def folder(tmp_path) -> Path:
    """A user's folder, outside the repository, with ./rules."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "live.yaml").write_text(RULES)
    return tmp_path


def test_pip_install_gives_a_reactor_command_that_works_from_any_folder(folder):
    where = subprocess.run([str(installed_bin() / "python"), "-c", "import reactor; print(reactor.__file__)"],
                           cwd=folder, env=reactor_env(), capture_output=True, text=True, timeout=60)
    assert str(installed_bin().parent) in where.stdout, "the installed copy, not the repository's"
    checked = reactor("check", cwd=folder)  # rules default to ./rules; the samples come from package data
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok: 2 rule(s) in 1 file(s), 2 example(s), 0 failing" in checked.stdout
    explained = reactor("explain", "webinar.ended", cwd=folder)
    assert explained.returncode == 0, explained.stderr
    assert 'PATCH /webinars/91234567890/livestream/status {"action": "stop"}   [Webinar stop]' in explained.stdout


@pytest.mark.parametrize("args, wrong", [
    (["check", "--bogus"], "unrecognized arguments: --bogus"),
    (["check", "rules", "--rules", "other"], "two rules paths"),
    (["explain", "meeting.started", "--topik", "Board"], "unrecognized arguments: --topik Board"),
    (["explain", "meeting.started", "--at", "2026-11-30T10:30:00"], "has no UTC offset"),
    (["send", "--at", "1764498600"], "looks like seconds: event_ts is in milliseconds"),
    (["send"], "name the event"),
    (["send", "meeting.started", "--file", "x.json"], "give the event once"),
    (["retry", "abc"], "invalid int value: 'abc'"),
    (["retry"], "name one action id"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_argument_errors_print_the_commands_own_usage(folder, args, wrong):
    result = reactor(*args, cwd=folder)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: reactor {args[0]} "), result.stderr
    assert f"reactor {args[0]}: error: " in result.stderr and wrong in result.stderr, result.stderr


def test_check_and_explain_take_rules_and_event_arguments_alike(folder):
    positional, option = reactor("check", "rules", cwd=folder), reactor("check", "--rules", "rules", cwd=folder)
    assert positional.returncode == option.returncode == 0 and positional.stdout == option.stdout
    (folder / "elsewhere.yaml").write_text("rules:\n  - name: Only host H\n    on: meeting.started\n"
                                           "    when: {host_id: H, id: 89123456789}\n    do: [livestream.start]\n")
    result = reactor("explain", "meeting.started", "--rules", "elsewhere.yaml", "--host-id", "H",
                     "--meeting-id", "89123456789", "--topic", "Board: Q4", "--at", "2026-11-30T10:30:00+01:00",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        "event meeting.started on meeting 89123456789 at Mon 2026-11-30 09:30:00Z",
        "  MATCH     Only host H  (elsewhere.yaml:2)"]


# -- a running reactor: `reactor dev` (what `make run` runs) ----------------------------------------


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    """`reactor dev` on a free port in a folder of its own, with no settings at all (dry run)."""
    home = tmp_path_factory.mktemp("dev")
    (home / "rules").mkdir()
    (home / "rules" / "live.yaml").write_text(RULES)
    port = free_port()
    out = open(home / "dev.out", "wb")
    proc = subprocess.Popen([str(installed_bin() / "reactor"), "dev"], cwd=home, env=reactor_env(PORT=str(port)),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, (home / "dev.out").read_text()
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.1)
    else:
        raise AssertionError("reactor dev did not become ready:\n" + (home / "dev.out").read_text())
    yield home, port
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    out.close()


def history(home: Path) -> list[dict]:
    result = reactor("history", "--json", "--limit", "1000", cwd=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def delivery_of(home: Path, answer: str) -> dict:
    """The history entry of the delivery a `send` answer names."""
    assert answer.startswith("200 "), answer
    number = json.loads(answer.splitlines()[0][4:])["delivery"]
    [found] = [d for d in history(home) if d["id"] == number]
    return found


def wait_finished(home: Path, number: int) -> dict:
    deadline = time.time() + 30
    while time.time() < deadline:
        [d] = [d for d in history(home) if d["id"] == number]
        if d["jobs"] and all(j["status"] in ("done", "dead", "skipped") for j in d["jobs"]):
            return d
        time.sleep(0.2)
    raise AssertionError(f"delivery {number} did not finish: {d['jobs']}")


def test_dev_writes_its_port_and_the_command_its_banner_prints_reaches_it(dev):
    home, port = dev
    port_file = home / "var" / "dev.port"
    assert port_file.read_text().strip() == str(port) and port_file.stat().st_mode & 0o777 == 0o600
    banner = (home / "dev.out").read_text()
    [send_line] = [line.strip() for line in banner.splitlines() if " send meeting.started" in line]
    assert send_line == f'{installed_bin() / "reactor"} send meeting.started --topic "Town Hall"', banner
    result = subprocess.run(["bash", "-c", send_line], cwd=home, env=reactor_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and '"status":"accepted"' in result.stdout, result.stdout + result.stderr
    number = delivery_of(home, result.stdout.strip())["id"]
    wait_finished(home, number)
    shown = reactor("history", cwd=home).stdout
    assert re.search(rf'^#{number} \S+ \S+ meeting.started meetings/85746065432 "Town Hall" '
                     r"host x1yCzABCDEfg23HiJKl4mN$", shown, re.M), shown
    # dry run (no Zoom credentials) with ${YOUTUBE_STREAM_KEY} unset: it runs, and says so
    assert '"stream_key": "<secret ${YOUTUBE_STREAM_KEY} unset>"' in shown
    assert "dry run: not sent" in shown


def test_send_posts_to_url_else_port_else_the_dev_port_else_8000(dev):
    home, port = dev
    unused = free_port()
    wrong = reactor("send", "meeting.started", cwd=home, env=reactor_env(PORT=str(unused)))
    assert wrong.returncode == 1 and f"cannot reach http://127.0.0.1:{unused}/webhooks/zoom" in wrong.stderr
    right = reactor("send", "meeting.started", "--url", f"http://127.0.0.1:{port}/webhooks/zoom", cwd=home,
                    env=reactor_env(PORT=str(unused)))
    assert right.returncode == 0 and right.stdout.startswith("200 "), right.stdout + right.stderr
    by_dev_port = reactor("send", "meeting.started", cwd=home)
    assert by_dev_port.returncode == 0 and by_dev_port.stdout.startswith("200 "), by_dev_port.stderr
    secret = (home / "var" / "local-webhook-secret").read_text().strip()
    by_port = reactor("send", "meeting.started", cwd=home / "rules",  # no var/dev.port there: $PORT found it
                      env=reactor_env(PORT=str(port), ZOOM_WEBHOOK_SECRET_TOKEN=secret))
    assert by_port.returncode == 0, by_port.stderr
    elsewhere = reactor("send", "meeting.started", cwd=home / "rules", env=reactor_env(ZOOM_WEBHOOK_SECRET_TOKEN=secret))
    if elsewhere.returncode == 1 and "cannot reach" in elsewhere.stderr:  # unless another reactor serves 8000
        assert "http://127.0.0.1:8000/webhooks/zoom" in elsewhere.stderr


def test_send_at_sets_the_event_time(dev):
    home, _ = dev
    at = datetime.now(timezone(timedelta(hours=1))).replace(microsecond=0) + timedelta(minutes=5)
    result = reactor("send", "meeting.started", "--topic", "Town Hall", "--at", at.isoformat(), cwd=home)
    assert result.returncode == 0, result.stderr
    assert delivery_of(home, result.stdout)["event_ts"] == int(at.timestamp()) * 1000
    epoch = int(at.timestamp() * 1000) + 1
    result = reactor("send", "meeting.started", "--at", str(epoch), cwd=home)
    assert delivery_of(home, result.stdout)["event_ts"] == epoch


def test_send_file_needs_no_event_name_and_gets_a_fresh_time_unless_kept(dev):
    home, _ = dev
    stale = {"event": "meeting.started", "event_ts": 1_700_000_000_000, "payload": {"account_id": "a", "object": {
        "id": "777", "uuid": "file-uuid-1==", "host_id": "h", "topic": "Town Hall from a file"}}}
    (home / "stale.json").write_text(json.dumps(stale))
    before = time.time() * 1000
    fresh = reactor("send", "--file", "stale.json", cwd=home)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    delivery = delivery_of(home, fresh.stdout)
    assert delivery["event_ts"] >= before and delivery["body"]["payload"]["object"]["uuid"] == "file-uuid-1=="
    done = wait_finished(home, delivery["id"])
    assert [j["status"] for j in done["jobs"]] == ["done", "done"], "fresh: not late"
    kept = reactor("send", "--file", "stale.json", "--keep-ts", "--uuid", "file-uuid-2==", cwd=home)
    delivery = delivery_of(home, kept.stdout)
    assert delivery["event_ts"] == 1_700_000_000_000
    late = wait_finished(home, delivery["id"])
    assert late["jobs"][0]["status"] == "dead" and late["jobs"][0]["last_message"] == LATE, "kept: late, as asked"


# -- retry, and dry run with unset secrets, on a reactor under gunicorn --------------------------------


def test_retry_names_the_action_and_brings_back_the_rules_chain(make_server, zoom):
    from tests.zoom_standin import Reply

    zoom.script("/v2/meetings/960/livestream", [Reply(400, {"code": 300, "message": "Invalid RTMP url"})])
    server = make_server(RULES, zoom=zoom)
    server.post({"event": "meeting.started", "event_ts": int(time.time() * 1000), "payload": {
        "account_id": ACCOUNT_ID, "object": {"id": "960", "uuid": "u960", "host_id": "h", "topic": "Town Hall"}}})
    configure, start = server.wait_jobs(2)
    assert (configure["status"], start["status"]) == ("dead", "skipped")
    env = reactor_env(DATABASE_URL=f"sqlite:///{server.db}")

    missing = reactor("retry", "999", cwd=server.tmp, env=env)
    assert missing.returncode == 1 and "no such action 999" in missing.stderr and "re-queued" not in missing.stdout
    skipped = reactor("retry", str(start["id"]), cwd=server.tmp, env=env)
    assert skipped.returncode == 1 and f"action {start['id']} is skipped, not dead" in skipped.stderr
    retried = reactor("retry", str(configure["id"]), cwd=server.tmp, env=env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip().splitlines()[-1] == (f"re-queued 2 actions: action {configure['id']}, "
                                      f"with the same rule's later action {start['id']}")
    deadline = time.time() + 20
    while time.time() < deadline and [j["status"] for j in server.jobs()] != ["done", "done"]:
        time.sleep(0.05)
    assert [j["status"] for j in server.jobs()] == ["done", "done"]
    assert [(c.path, c.status) for c in zoom.api_calls()] == [
        ("/v2/meetings/960/livestream", 400), ("/v2/meetings/960/livestream", 204),
        ("/v2/meetings/960/livestream/status", 204)], "the configure again, then its start"
    again = reactor("retry", str(configure["id"]), cwd=server.tmp, env=env)
    assert again.returncode == 1 and f"action {configure['id']} is done, not dead" in again.stderr


UNSET_RULES = """
rules:
  - name: Needs a key
    on: meeting.started
    do:
      - livestream.configure:
          stream_url: rtmp://x/live
          stream_key: ${UNSET_TEST_STREAM_KEY}
          page_url: https://x/live
"""


def test_dry_run_starts_with_unset_secrets_and_history_shows_them_unset(make_server, zoom):
    server = make_server(UNSET_RULES)  # no Zoom: dry run
    server.post({"event": "meeting.started", "event_ts": int(time.time() * 1000), "payload": {
        "account_id": "a", "object": {"id": "970", "uuid": "u970", "host_id": "h", "topic": "T"}}})
    [job] = server.wait_jobs(1)
    assert job["status"] == "done" and job["attempt_log"][0]["message"] == "dry run: not sent"
    shown = reactor("history", cwd=server.tmp, env=reactor_env(DATABASE_URL=f"sqlite:///{server.db}")).stdout
    assert '"stream_key": "<secret ${UNSET_TEST_STREAM_KEY} unset>"' in shown
    assert "dry run: <secret ${UNSET_TEST_STREAM_KEY} unset>" in server.logs(), "a warning at start-up names it"

    real = make_server(UNSET_RULES, zoom=zoom, start=False, sub="real")
    with pytest.raises(AssertionError, match="environment variable UNSET_TEST_STREAM_KEY is not set"):
        real.start()
