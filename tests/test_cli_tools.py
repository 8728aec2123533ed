"""The command line's promises: history filters, retry --dead, send --uuid, and the rule-language bounds."""
from __future__ import annotations

import json
import time

from reactor.store import NewDelivery, open_store
from tests.conftest import SECRET, event, run_cli
from tests.zoom_standin import Reply


def test_history_filters_by_since_and_meeting_and_prints_json(make_server, tmp_path):
    server = make_server()
    url = server.env["DATABASE_URL"]
    store = open_store(url)
    try:  # a delivery received three hours ago, through the store's own accept
        old = store.accept(NewDelivery("old-1", "meeting.started", int((time.time() - 3 * 3600) * 1000),
                                       time.time() - 3 * 3600, {"event": "meeting.started"}, "[]",
                                       "meetings/71000000001"), [], time.time())
    finally:
        store.close()
    new_a = server.post(event(meeting_id="71000000001", topic="Town Hall")).json()["delivery"]
    new_b = server.post(event(meeting_id="71000000002", topic="Town Hall")).json()["delivery"]

    def ids(*args):
        result = run_cli("history", "--json", *args, env={"DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
        return sorted(d["id"] for d in json.loads(result.stdout))

    assert ids() == sorted([old.delivery_id, new_a, new_b])
    assert ids("--since", "1h") == sorted([new_a, new_b])
    assert ids("--since", "4h") == sorted([old.delivery_id, new_a, new_b])
    assert ids("--since", "90m") == sorted([new_a, new_b])
    assert ids("--meeting", "71000000001") == sorted([old.delivery_id, new_a])
    assert ids("--meeting", "71000000001", "--since", "2h") == [new_a]
    [row] = json.loads(run_cli("history", "--json", "--meeting", "71000000002", env={"DATABASE_URL": url}).stdout)
    assert row["event"] == "meeting.started" and row["jobs"][0]["action"]["kind"] == "livestream.start"
    text = run_cli("history", "--meeting", "71000000002", env={"DATABASE_URL": url}).stdout
    assert f"#{new_b} " in text and "meetings/71000000002" in text and "71000000001" not in text
    bad = run_cli("history", "--since", "yesterday", env={"DATABASE_URL": url})
    assert bad.returncode != 0 and "use a number and s, m, h or d" in bad.stderr


def test_retry_dead_requeues_every_dead_action_and_nothing_else(make_server, zoom):
    for meeting in ("72000000001", "72000000002"):
        zoom.script(f"/v2/meetings/{meeting}/", [Reply(404, {"code": 3001, "message": "Meeting does not exist"})])
    server = make_server(zoom=zoom)
    for meeting in ("72000000001", "72000000002", "72000000003"):
        assert server.post(event(meeting_id=meeting, topic="Town Hall")).status_code == 200
    jobs = server.wait_jobs(3)
    assert sorted(j["status"] for j in jobs) == ["dead", "dead", "done"]
    env = {"DATABASE_URL": server.env["DATABASE_URL"]}
    refused = run_cli("retry", env=env)
    assert refused.returncode == 2 and "--dead" in refused.stderr
    listed = run_cli("retry", "--dead", env=env)
    assert listed.returncode == 0 and "2 of 2 dead action(s) would be re-queued" in listed.stdout, listed.stdout
    result = run_cli("retry", "--dead", "--yes", env=env)
    assert result.returncode == 0 and "re-queued 2 dead action(s)" in result.stdout, result.stdout + result.stderr
    server.wait_jobs(3, statuses=("done",))
    time.sleep(1.0)
    paths = sorted(c.path.split("/")[3] for c in zoom.api_calls())
    assert paths == ["72000000001", "72000000001", "72000000002", "72000000002", "72000000003"]
    again = run_cli("retry", "--dead", "--yes", env=env)
    assert again.returncode == 1 and "re-queued 0 dead action(s)" in again.stdout


def test_send_uuid_repeats_a_meeting_instance_so_the_second_send_is_a_duplicate(make_server):
    server = make_server()
    env = {"ZOOM_WEBHOOK_SECRET_TOKEN": SECRET, "DATABASE_URL": server.env["DATABASE_URL"]}
    url = server.url + "/webhooks/zoom"
    first = run_cli("send", "meeting.started", "--uuid", "repeat-me-73==", "--url", url, env=env)
    second = run_cli("send", "meeting.started", "--uuid", "repeat-me-73==", "--url", url, env=env)
    assert first.returncode == 0 and '"status":"accepted"' in first.stdout, first.stdout + first.stderr
    number = json.loads(first.stdout.split(" ", 1)[1].splitlines()[0])["delivery"]
    assert f"delivery {number}: matched " in first.stdout and "action(s) planned" in first.stdout, first.stdout
    assert second.returncode == 0 and f"a duplicate of delivery {number}: nothing new planned" in second.stdout, \
        second.stdout
    fresh = [run_cli("send", "meeting.started", "--url", url, env=env) for _ in range(2)]
    assert all('"status":"accepted"' in r.stdout for r in fresh), "without --uuid each send is a new instance"
    uuids = [d["body"]["payload"]["object"]["uuid"] for d in server.history()]
    assert uuids.count("repeat-me-73==") == 1 and len(set(uuids)) == 3


def check(tmp_path, rules: str):
    (tmp_path / "rules.yaml").write_text(rules)
    return run_cli("check", str(tmp_path / "rules.yaml"))


def test_regex_and_glob_look_at_the_first_1000_characters_of_a_field(tmp_path):
    at_1000 = "x" * 997 + "END"   # the pattern's match ends at character 1,000: seen
    at_1001 = "x" * 998 + "END"   # ... at character 1,001: not seen
    start_1000 = "x" * 999 + "S"
    rules = f"""
rules:
  - name: Glob at the end
    on: meeting.started
    when: {{topic: {{glob: "*END"}}}}
    do: [livestream.stop]
    examples:
      - {{event: meeting.started, with: {{topic: "{at_1000}"}}, expect: match}}
      - {{event: meeting.started, with: {{topic: "{at_1001}"}}, expect: no match}}
  - name: Regex at the end
    on: meeting.started
    when: {{topic: {{regex: "END$"}}}}
    do: [livestream.stop]
    examples:
      - {{event: meeting.started, with: {{topic: "{at_1000}"}}, expect: match}}
      - {{event: meeting.started, with: {{topic: "{at_1001}"}}, expect: no match}}
  - name: Regex inside
    on: meeting.started
    when: {{topic: {{regex: "xS"}}}}
    do: [livestream.stop]
    examples:
      - {{event: meeting.started, with: {{topic: "{start_1000}"}}, expect: match}}
      - {{event: meeting.started, with: {{topic: "{start_1000}y"}}, expect: match}}
      - {{event: meeting.started, with: {{topic: "x{start_1000}"}}, expect: no match}}
"""
    result = check(tmp_path, rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 example(s), 0 failing" in result.stdout


def test_patterns_longer_than_500_characters_are_a_rule_load_error(tmp_path):
    ok = "a" * 500
    rules = f"""
rules:
  - name: Long but allowed
    on: meeting.started
    when: {{topic: {{regex: "{ok}"}}}}
    do: [livestream.stop]
  - name: Too long regex
    on: meeting.started
    when: {{topic: {{regex: "{ok}b"}}}}
    do: [livestream.stop]
  - name: Too long glob
    on: meeting.started
    when: {{topic: {{glob: "{ok}*"}}}}
    do: [livestream.stop]
"""
    result = check(tmp_path, rules)
    assert result.returncode == 1
    where = str(tmp_path / "rules.yaml")
    assert f'{where}:9: rule "Too long regex": topic: the regex pattern is longer than 500 characters' in result.stdout
    assert f'{where}:13: rule "Too long glob": topic: the glob pattern is longer than 500 characters' in result.stdout
    assert "Long but allowed" not in result.stdout and "2 problem(s)" in result.stdout
