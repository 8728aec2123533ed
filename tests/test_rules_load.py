"""Loading rule files: every problem with file, line, rule and a suggestion (pure but for files)."""
import subprocess
import sys
from pathlib import Path

import pytest

from reactor.errors import RulesError
from reactor.rules.load import load_rules
from reactor.secrets import encrypt, keygen
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def problems(tmp_path, text: str, env=None, key="") -> list[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(path, env=env or {}, secret_key=key)
    return info.value.problems


def rule(body: str, name="r") -> str:
    return f"rules:\n  - name: {name}\n" + body


BAD = [
    ("typo-matcher", rule("    on: meeting.started\n    when:\n      topic: {globb: 'x*'}\n    do: [livestream.stop]\n"),
     ':5: rule "r": topic: unknown matcher \'globb\' (did you mean \'glob\'?)'),
    ("typo-rule-key", rule("    on: meeting.started\n    wehn: {topic: x}\n    do: [livestream.stop]\n"),
     ":4: rule \"r\": unknown key 'wehn' (did you mean 'when'?)"),
    ("no-on", rule("    do: [livestream.stop]\n"), "needs 'on:'"),
    ("no-do", rule("    on: meeting.started\n"), "needs 'do:'"),
    ("empty-do", rule("    on: meeting.started\n    do: []\n"), ":4: rule \"r\": 'do' must list at least one action"),
    ("unknown-action", rule("    on: meeting.started\n    do: [livestream.strat]\n"),
     "unknown action 'livestream.strat' (did you mean 'livestream.start'?)"),
    ("unknown-setting", rule("    on: meeting.started\n    do:\n      - livestream.start: {display_nam: x}\n"),
     ":5: rule \"r\": livestream.start: unknown setting 'display_nam' (did you mean 'display_name'?)"),
    ("bool-setting", rule("    on: meeting.started\n    do:\n      - livestream.start: {active_speaker_name: yes}\n"),
     "'active_speaker_name' must be true or false"),
    ("configure-missing", rule("    on: meeting.started\n    do:\n      - livestream.configure: {stream_url: x}\n"),
     "'stream_key' is required"),
    ("resolution", rule("    on: meeting.started\n    do:\n      - livestream.configure: {stream_url: a, stream_key: b, "
                        "page_url: c, resolution: 4k}\n"), "resolution must be 720p or 1080p"),
    ("bad-regex", rule("    on: meeting.started\n    when: {topic: {regex: '('}}\n    do: [livestream.stop]\n"),
     ":4: rule \"r\": topic: invalid regex '('"),
    ("bad-timezone", rule("    on: meeting.started\n    when:\n      during: {from: '09:00', to: '10:00', timezone: Europe/Berln}\n"
                          "    do: [livestream.stop]\n"), "unknown timezone 'Europe/Berln'"),
    ("bad-time", rule("    on: meeting.started\n    when:\n      during: {from: 9, to: '10:00'}\n    do: [livestream.stop]\n"),
     "'from' must be a time \"HH:MM\""),
    ("bad-day", rule("    on: meeting.started\n    when:\n      during: {days: [mnday], from: '09:00', to: '10:00'}\n"
                     "    do: [livestream.stop]\n"), "is not a day"),
    ("gt-text", rule("    on: meeting.started\n    when: {duration: {gt: many}}\n    do: [livestream.stop]\n"),
     "'gt' takes a number"),
    ("exists-text", rule("    on: meeting.started\n    when: {topic: {exists: yes}}\n    do: [livestream.stop]\n"),
     "'exists' takes true or false"),
    ("bad-path", rule("    on: meeting.started\n    when: {'topic..x': 1}\n    do: [livestream.stop]\n"),
     "is not a field path"),
    ("env-unset", rule("    on: meeting.started\n    do:\n      - livestream.configure: {stream_url: a, "
                       "stream_key: '${NOPE_KEY}', page_url: c}\n"),
     ":5: rule \"r\": livestream.configure: stream_key: environment variable NOPE_KEY is not set"),
    ("enc-no-key", rule("    on: meeting.started\n    do:\n      - livestream.configure: {stream_url: a, "
                        "stream_key: 'enc:gAAAA', page_url: c}\n"), "needs REACTOR_SECRET_KEY"),
    ("secret-and-template", rule("    on: meeting.started\n    do:\n      - livestream.start: "
                                 "{display_name: '${X} {{ topic }}'}\n"), "not both"),
    ("not-yaml", "rules: [\n", "not valid YAML"),
    ("duplicate-key", rule("    on: meeting.started\n    on: meeting.ended\n    do: [livestream.stop]\n"),
     "the key 'on' appears twice (first on line 3)"),
    ("no-rules-key", "rulez: []\n", "a 'rules:' list at the top"),
    ("python-tag", "rules: !!python/object:os.system {}\n", "not allowed"),
    ("examples-bad-expect", rule("    on: meeting.started\n    do: [livestream.stop]\n    examples:\n"
                                 "      - {event: meeting.started, expect: yes}\n"), "'expect' must be 'match' or 'no match'"),
    ("example-unknown-sample", rule("    on: meeting.started\n    do: [livestream.stop]\n    examples:\n"
                                    "      - {event: meeting.startd, expect: match}\n"), "did you mean 'meeting.started'"),
]


@pytest.mark.parametrize("text,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_rules_say_where_and_what(tmp_path, text, expected):
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found
    assert all(p.startswith(str(tmp_path / "rules.yaml")) for p in found)


def test_duplicate_names_across_files_name_both_places(tmp_path):
    (tmp_path / "a.yaml").write_text(rule("    on: meeting.started\n    do: [livestream.stop]\n", "Same"))
    (tmp_path / "b.yml").write_text(rule("    on: meeting.started\n    do: [livestream.stop]\n", "Same"))
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path)
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path / 'b.yml'}:2: rule \"Same\": duplicate rule name")
    assert f"{tmp_path / 'a.yaml'}:2" in problem


def test_every_problem_is_listed_not_just_the_first(tmp_path):
    found = problems(tmp_path, rule("    on: meeting.started\n    when: {topic: {globb: x}, id: {regex: '('}}\n"
                                    "    do: [livestream.strat]\n"))
    assert len(found) == 3


def test_unknown_event_is_an_error_unless_the_rule_opts_out(tmp_path):
    """Trap 3: a rule on an event that does not exist never fires; it used to be only a warning."""
    found = problems(tmp_path, rule("    on: meeting.start\n    do: [livestream.stop]\n"))
    assert found == [f"{tmp_path / 'rules.yaml'}:3: rule \"r\": unknown event 'meeting.start' (did you mean "
                     f"'meeting.started'?): the rule would never fire; for an event reactor does not know yet, add "
                     f"'on_unknown_event: allow' to the rule"]
    path = tmp_path / "new.yaml"
    path.write_text(rule("    on: meeting.future_thing\n    on_unknown_event: allow\n"
                         "    when: {some.field: 1}\n    do: [livestream.stop]\n"))
    [r] = load_rules(path).rules
    assert r.events == ("meeting.future_thing",)
    assert "'on_unknown_event' takes only 'allow'" in problems(
        tmp_path, rule("    on: meeting.x\n    on_unknown_event: yes\n    do: [livestream.stop]\n"))[0]


def test_yaml_on_trap_and_string_values(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  - name: NO\n    on: meeting.started\n    do:\n"
                    "      - livestream.start: {display_name: 0800, close_caption: off}\n")
    [r] = load_rules(path).rules
    assert r.name == "NO" and r.events == ("meeting.started",)
    assert dict(r.actions[0].args) == {"display_name": "0800", "close_caption": "off"}


def test_secrets_resolve_and_encrypt(tmp_path):
    key = keygen()
    token = encrypt("the-real-stream-key", key)
    path = tmp_path / "r.yaml"
    path.write_text(rule(f"    on: meeting.started\n    do:\n      - livestream.configure: {{stream_url: a, "
                         f"stream_key: '{token}', page_url: c}}\n"))
    load_rules(path, env={}, secret_key=key)
    with pytest.raises(RulesError, match="does not decrypt"):
        load_rules(path, env={}, secret_key=keygen())


def test_check_fails_on_typo_with_file_line_and_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(rule("    on: meeting.started\n    when:\n      topic: {globb: 'Town Hall*'}\n"
                         "    do: [livestream.stop]\n", "Stream town halls"))
    result = run_cli("check", str(tmp_path))
    assert result.returncode == 1
    assert f"{path}:5: rule \"Stream town halls\": topic: unknown matcher 'globb' (did you mean 'glob'?)" in result.stdout


def test_check_passes_shipped_rules_and_runs_their_examples():
    result = run_cli("check", "rules")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failing" in result.stdout
    examples = int(result.stdout.split(" example(s)")[0].rsplit(" ", 1)[1])
    assert examples >= 5


def test_check_fails_when_an_example_disagrees(tmp_path):
    (tmp_path / "r.yaml").write_text(rule(
        "    on: meeting.started\n    when: {topic: {glob: 'Town*'}}\n    do: [livestream.stop]\n    examples:\n"
        "      - event: meeting.started\n        with: {topic: Board}\n        expect: match\n"))
    result = run_cli("check", str(tmp_path))
    assert result.returncode == 1
    assert "example expected match, got no match: topic should match glob 'Town*': saw 'Board'" in result.stdout


def test_explain_prints_verdicts_failures_and_masked_calls():
    result = run_cli("explain", "meeting.started", "--rules", "rules", env={"YOUTUBE_STREAM_KEY": "sk-live-123456"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "MATCH     Stream town halls" in out
    assert "no match  Sunday service" in out and "event_ts should be during sun 09:30-12:30 Europe/Berlin: saw Wed" in out
    assert "no match  Board meeting by id" in out and "disabled" in out
    assert "PATCH /meetings/85746065432/livestream/status" in out
    assert "<secret ${YOUTUBE_STREAM_KEY}>" in out
    assert "sk-live-123456" not in out + result.stderr


def test_check_explain_encrypt_keygen_need_no_credentials(tmp_path):
    bare = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    key = subprocess.run([sys.executable, "-m", "reactor", "keygen"], capture_output=True, text=True, cwd=ROOT,
                         env=bare, timeout=60)
    assert key.returncode == 0 and len(key.stdout.strip()) == 44
    enc = subprocess.run([sys.executable, "-m", "reactor", "encrypt"], input="my-stream-key\n", capture_output=True,
                         text=True, cwd=ROOT, env={**bare, "REACTOR_SECRET_KEY": key.stdout.strip()}, timeout=60)
    assert enc.returncode == 0 and enc.stdout.startswith("enc:") and "my-stream-key" not in enc.stdout
    for args in (["check", "rules"], ["explain", "meeting.started"]):
        result = subprocess.run([sys.executable, "-m", "reactor", *args], capture_output=True, text=True, cwd=ROOT,
                                env=bare, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_examples_and_explain_read_event_files(tmp_path):
    import json as _json
    event = {"event": "meeting.started", "event_ts": 1764176405123,
             "payload": {"account_id": "a", "object": {"id": "123", "topic": "Board Q4"}}}
    (tmp_path / "board.json").write_text(_json.dumps(event))
    (tmp_path / "r.yaml").write_text(rule(
        "    on: meeting.started\n    when: {topic: {glob: 'Board*'}}\n    do: [livestream.stop]\n    examples:\n"
        "      - {event: board.json, expect: match}\n      - {event: board.json, with: {topic: x}, expect: no match}\n",
        "Board"))
    result = run_cli("check", str(tmp_path))
    assert result.returncode == 0 and "2 example(s), 0 failing" in result.stdout, result.stdout
    explained = run_cli("explain", str(tmp_path / "board.json"), "--rules", str(tmp_path))
    assert "MATCH     Board" in explained.stdout
    assert "PATCH /meetings/123/livestream/status {\"action\": \"stop\"}" in explained.stdout


# -- traps that used to pass `check` silently (issue 19): each now fails or warns, at file:line, with the fix --


def warnings_of(tmp_path, text: str) -> list[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return list(load_rules(path, env={}).warnings)


def during_rule(days: str) -> str:
    return rule(f"    on: meeting.started\n    when:\n      during: {{days: {days}, from: '09:00', to: '17:00'}}\n"
                "    do: [livestream.stop]\n")


@pytest.mark.parametrize("days,fix", [
    ("[mon..fri]", "(did you mean 'mon-fri'?)"),
    ("[monkey]", "(did you mean 'monday'?)"),
    ("[mon to fri]", "(did you mean 'mon-fri'?)"),
    ("[mon-fry]", ""),
], ids=["dots", "monkey", "to", "range-typo"])
def test_trap1_a_day_must_be_a_day_or_a_range(tmp_path, days, fix):
    [found] = problems(tmp_path, during_rule(days))
    item = days.strip("[]")
    assert found.startswith(f"{tmp_path / 'rules.yaml'}:5: rule \"r\": during: '{item}' is not a day or a range "
                            f"of days {fix}".rstrip()), found
    assert "a range as mon-fri (fri-mon wraps over the weekend)" in found


TRAPS = [
    # (id, rule body, expected problem text after `file:LINE: rule "r": `)
    ("trap4-template-typo", "    on: meeting.started\n    do:\n      - livestream.start: {display_name: 'Board: {{ topc }}'}\n",
     ":5: rule \"r\": livestream.start: display_name: {{ topc }}: 'topc' is not a field of meeting.started "
     "(did you mean 'topic'?); a field reactor does not list is reached by its full path, payload.object.topc"),
    ("trap4-condition-typo", "    on: meeting.started\n    when: {hots_id: abc}\n    do: [livestream.stop]\n",
     ":4: rule \"r\": 'hots_id' is not a field of meeting.started (did you mean 'host_id'?)"),
    ("trap4-cut-short", "    on: meeting.participant_joined\n    when: {participant.emai: a@b.c}\n"
                        "    do: [livestream.stop]\n",
     ":4: rule \"r\": 'participant.emai' is not a field of meeting.participant_joined (did you mean 'participant.email'?)"),
    ("trap5-layout", "    on: meeting.started\n    do:\n      - livestream.start: {layout: speaker}\n",
     ":5: rule \"r\": livestream.start: layout must be follow_host or gallery_view or speaker_view, not 'speaker' "
     "(did you mean 'speaker_view'?)"),
    ("trap5-close-caption", "    on: meeting.started\n    do:\n      - livestream.start: {close_caption: burned-in}\n",
     ":5: rule \"r\": livestream.start: close_caption must be burnt-in or embedded or off, not 'burned-in'"),
    ("trap5-resolution", "    on: meeting.started\n    do:\n      - livestream.configure: {stream_url: a, stream_key: b, "
                         "page_url: c, resolution: 1080}\n",
     ":5: rule \"r\": livestream.configure: resolution must be 720p or 1080p, not '1080' (did you mean '1080p'?)"),
    ("trap5-display-name-too-long", "    on: meeting.started\n    do:\n      - livestream.start: {display_name: '"
                                    + "x" * 51 + "'}\n",
     ":5: rule \"r\": livestream.start: display_name is 51 characters; Zoom takes 1 to 50"),
    ("trap5-display-name-empty", "    on: meeting.started\n    do:\n      - livestream.start: {display_name: ' '}\n",
     ":5: rule \"r\": livestream.start: display_name is 0 characters; Zoom takes 1 to 50"),
    ("trap5-display-name-fixed-text", "    on: meeting.started\n    do:\n      - livestream.start: {display_name: '"
                                      + "y" * 49 + " {{ topic }} z'}\n",
     ":5: rule \"r\": livestream.start: display_name's fixed text alone is 52 characters; Zoom takes at most 50"),
    ("trap5-webinar-layout", "    on: [webinar.started]\n    do:\n      - livestream.start: {layout: follow_host}\n",
     ":5: rule \"r\": livestream.start: 'layout' is a meeting setting; Zoom's webinar live stream takes only "
     "display_name and active_speaker_name: remove it (the rule is on webinar events only)"),
    ("trap5-webinar-caption", "    on: webinar.started\n    do:\n      - livestream.start: {close_caption: 'off'}\n",
     ":5: rule \"r\": livestream.start: 'close_caption' is a meeting setting"),
    ("trap6-unless-typo", "    on: meeting.started\n    do: [livestream.stop]\nunless: {topc: {contains: x}}\n",
     ":5: unless: 'topc' is not a field of meeting.started (did you mean 'topic'?)"),
    ("contains-needs-text", "    on: meeting.started\n    when: {topic: {contains: ''}}\n    do: [livestream.stop]\n",
     ":4: rule \"r\": topic: 'contains' takes a non-empty string"),
]


@pytest.mark.parametrize("body,expected", [t[1:] for t in TRAPS], ids=[t[0] for t in TRAPS])
def test_traps_fail_check_with_file_line_and_fix(tmp_path, body, expected):
    found = problems(tmp_path, rule(body))
    assert any(p.startswith(str(tmp_path / "rules.yaml") + expected) for p in found), found


def test_trap4_a_field_of_other_events_warns(tmp_path):
    [warning] = warnings_of(tmp_path, rule("    on: meeting.started\n    do:\n"
                                           "      - livestream.start: {display_name: '{{ participant.user_name }}'}\n"))
    assert warning == (f"{tmp_path / 'rules.yaml'}:5: rule \"r\": livestream.start: display_name: "
                       "{{ participant.user_name }}: 'participant.user_name' is a field of meeting.participant_joined, "
                       "meeting.participant_left, webinar.participant_joined, …, not of meeting.started: on this "
                       "rule's events it is always missing; add such an event to 'on:', or write "
                       "payload.object.participant.user_name if you know it is there")


def test_fields_of_unknown_or_listed_events_and_full_paths_pass(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "rules:\n"
        "  - name: joined\n    on: [meeting.started, meeting.participant_joined]\n"
        "    when: {participant.email: {exists: true}, payload.object.custom_field: 1, payload.account_id: a}\n"
        "    do:\n      - livestream.start: {display_name: '{{ participant.user_name }} {{ payload.object.x }}'}\n"
        "  - name: recording\n    on: recording.completed\n    when: {recording_files.0.file_type: MP4}\n"
        "    do: [livestream.stop]\n"
        "  - name: future\n    on: meeting.someday\n    on_unknown_event: allow\n    when: {anything.at_all: 1}\n"
        "    do: [livestream.stop]\n")
    assert [r.name for r in load_rules(path).rules] == ["joined", "recording", "future"]


def test_trap2_a_word_in_glob_brackets_warns_and_strict_fails(tmp_path):
    text = rule("    on: meeting.started\n    when:\n      topic: {not: {glob: '*[private]*'}}\n"
                "    do: [livestream.stop]\n")
    [warning] = warnings_of(tmp_path, text)
    assert warning == (f"{tmp_path / 'rules.yaml'}:5: rule \"r\": topic: in the glob '*[private]*', [private] matches "
                       "ONE character out of p, r, i, v, a, t, e, not the text '[private]': to match the text write "
                       "{contains: '[private]'}, or escape the bracket: '*[[]private]*'")
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path / "rules.yaml", env={}, strict=True)
    assert info.value.problems == [warning + " (a warning; --strict makes it an error)"]
    for fine in ("'[Tt]own*'", "'*[0-9]*'", "'*[!x]*'", "'*[[]private]*'"):
        assert warnings_of(tmp_path, rule(f"    on: meeting.started\n    when: {{topic: {{glob: {fine}}}}}\n"
                                          "    do: [livestream.stop]\n")) == [], fine


def test_check_prints_warnings_and_exits_0(tmp_path):
    (tmp_path / "r.yaml").write_text(rule("    on: meeting.started\n    when: {topic: {glob: '*[private]*'}}\n"
                                          "    do: [livestream.stop]\n"))
    result = run_cli("check", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"warning: {tmp_path / 'r.yaml'}:4: rule \"r\": topic: in the glob '*[private]*'" in result.stdout


def test_trap5_rule_on_meetings_and_webinars_warns_about_meeting_settings(tmp_path):
    [warning] = warnings_of(tmp_path, rule("    on: [meeting.started, webinar.started]\n    do:\n"
                                           "      - livestream.start: {layout: gallery_view}\n"))
    assert warning == (f"{tmp_path / 'rules.yaml'}:5: rule \"r\": livestream.start: 'layout' is a meeting setting: it "
                       "is sent for meetings and left out for webinar.started; to say so explicitly, split the rule "
                       "into a meeting and a webinar rule")


@pytest.mark.parametrize("text,hint", [
    ("rules:\n\t- name: x\n", "rules.yaml:2: not valid YAML: found character that cannot start any token: "
                              "use spaces, not tabs, for indentation"),
    ("rules:\n  - name: x\n    on: meeting.started\n\twhen: {topic: x}\n", "use spaces, not tabs, for indentation"),
    ("rules:\n  - name: x\n    on: meeting.started\n    when: {topic: {regex: \"^Board \\d+\"}}\n",
     "rules.yaml:4: not valid YAML: found unknown escape character: write regexes in single quotes ('...') so "
     "backslashes stay as written"),
], ids=["tab-first", "tab-later", "double-quoted-regex"])
def test_trap9_yaml_errors_say_what_to_do(tmp_path, text, hint):
    [found] = problems(tmp_path, text)
    assert hint in found, found


def test_trap7_explain_shows_every_failing_condition_in_plain_english(tmp_path):
    (tmp_path / "r.yaml").write_text(rule(
        "    on: meeting.started\n    when:\n      topic: Board\n      duration: {gt: 90}\n"
        "      host_id: [x, y]\n      id: 85746065432\n    do: [livestream.stop]\n", "Board"))
    result = run_cli("explain", "meeting.started", "--rules", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert ("  no match  Board  (" + str(tmp_path / "r.yaml") + ":2): 3 conditions failed:\n"
            "            - topic should equal 'Board': saw 'Town Hall - November' (line 5)\n"
            "            - duration should be > 90: saw 60 (line 6)\n"
            "            - host_id should be one of ['x', 'y']: saw 'x1yCzABCDEfg23HiJKl4mN' (line 7)\n") in result.stdout
    assert "should equals" not in result.stdout


def test_trap6_file_level_unless_excludes_every_rule_and_explain_names_it(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "unless:\n  topic: {contains: '[private]'}\n"
        "rules:\n  - name: Town halls\n    on: meeting.started\n    when: {topic: {glob: 'Town Hall*'}}\n"
        "    do: [livestream.stop]\n"
        "  - name: Everything\n    on: meeting.started\n    do: [livestream.stop]\n"
        "    examples:\n      - {event: meeting.started, with: {topic: 'Town Hall [PRIVATE]'}, expect: no match}\n"
        "      - {event: meeting.started, expect: match}\n")
    (tmp_path / "other.yaml").write_text("rules:\n  - name: Other file\n    on: meeting.started\n"
                                         "    do: [livestream.stop]\n")
    assert "2 example(s), 0 failing" in run_cli("check", str(tmp_path)).stdout
    result = run_cli("explain", str(_event_file(tmp_path, "Town Hall [private] rehearsal")), "--rules", str(tmp_path))
    assert (f"  no match  Town halls  ({tmp_path / 'r.yaml'}:4): excluded by file-level unless "
            f"({tmp_path / 'r.yaml'}:1): topic contains '[private]': saw 'Town Hall [private] rehearsal'") in result.stdout
    assert "no match  Everything" in result.stdout and "MATCH     Other file" in result.stdout


def _event_file(tmp_path, topic: str):
    import json as _json
    from reactor.samples import sample
    body = sample("meeting.started")
    body["payload"]["object"]["topic"] = topic
    path = tmp_path / "event.json"
    path.write_text(_json.dumps(body))
    return path


def test_a_large_rule_set_is_compacted_with_no_parsing_value_left_in_the_value_caches(tmp_path):
    """Loading 10,000 rules copies them into fresh memory so the parser's garbage can go; a field value
    kept in the rules' number/equality caches from parsing would pin it (measured: a worker's RSS with the
    bench's 10,000 rules 92 MB against 118 MB)."""
    from reactor.rules import model
    from reactor.rules.load import COMPACT_ABOVE
    from tests.test_rules_match import ev

    count = COMPACT_ABOVE + 1
    (tmp_path / "r.yaml").write_text("rules:\n" + "".join(
        f"  - name: r{n}\n    on: meeting.started\n    when: {{id: {80_000_000_000 + n}}}\n    do: [livestream.start]\n"
        for n in range(count)))
    rules = load_rules(tmp_path)
    assert len(rules.rules) == count
    assert model._eq_key.cache_info().currsize == 0 and model._number_of.cache_info().currsize == 0
    assert [r.name for r in rules.matching(ev({"id": 80_000_000_007}))] == ["r7"]


def test_a_pattern_written_again_is_compiled_once_and_still_warned_about_at_each_rule(tmp_path):
    (tmp_path / "r.yaml").write_text("rules:\n" + "".join(
        f"  - name: r{n}\n    on: meeting.started\n    when: {{topic: {{glob: '*[private]*'}}, id: {n}}}\n"
        "    do: [livestream.start]\n" for n in range(3)))
    rules = load_rules(tmp_path)
    patterns = {id(r.condition.conditions[0].matcher) for r in rules.rules}
    assert len(patterns) == 1
    assert [w.split(":")[1] for w in rules.warnings] == ["4", "8", "12"], rules.warnings


def test_equal_matchers_are_one_object_and_look_alike_values_are_not_merged(tmp_path):
    """Rules written from one template share their matchers (a worker with the bench's 10,000 rules: 83 ->
    71 MB); values Python calls equal but rules keep apart (1, 1.0, true, '1') keep their own."""
    (tmp_path / "r.yaml").write_text("rules:\n" + "".join(
        f"  - name: r{n}\n    on: meeting.started\n    when: {{host_id: h{n % 2}, duration: {{gt: 240}}, type: {v}}}\n"
        "    do: [livestream.start]\n" for n, v in enumerate(["1", "1.0", "true", "'1'", "1", "1.0", "true", "'1'"])))
    rules = load_rules(tmp_path)
    bound = {id(r.condition.conditions[1].matcher) for r in rules.rules}
    host = [id(r.condition.conditions[0].matcher) for r in rules.rules]
    kinds = [r.condition.conditions[2].matcher for r in rules.rules]
    assert len(bound) == 1 and len(set(host)) == 2 and host[0] == host[2] != host[1]
    # 1 and '1' are one value to rules (digits are kept as written); 1.0 is shown as written, true is a boolean
    assert len({id(k) for k in kinds}) == 3 and kinds[0] is kinds[3] is kinds[4] and kinds[2] is kinds[6]
    assert kinds[1] is not kinds[0] and kinds[2] is not kinds[0]
    from tests.test_rules_match import ev

    assert [r.name for r in rules.matching(ev({"host_id": "h0", "duration": 300, "type": True}))] == ["r2", "r6"]
    assert [r.name for r in rules.matching(ev({"host_id": "h1", "duration": 300, "type": 1}))] == ["r1", "r3", "r5", "r7"]
    short = ev({"host_id": "h0", "duration": 60, "type": True})
    assert [str(v.failure) for v in rules.evaluate(short)] == [f"duration should be > 240: saw 60 (line {4 * n + 4})"
                                                              for n in (0, 2, 4, 6)]
    shared = [k for k in short.cache if isinstance(k, tuple) and k[0] == next(iter(bound))]
    assert shared == [(next(iter(bound)), "duration")], "the shared bound is tested once for the four rules"
    assert short.cache[shared[0]][1] is False


def test_a_shared_result_is_read_only_for_the_matcher_that_made_it(tmp_path):
    """An id is unique only while its object lives: an entry left under a matcher's id by another matcher (one
    freed since, its id reused, as an event explained again after a reload could see) is not taken as this one's."""
    (tmp_path / "r.yaml").write_text("rules:\n  - name: long\n    on: meeting.started\n    when: {duration: {gt: 240}}\n"
                                     "    do: [livestream.start]\n")
    rules = load_rules(tmp_path)
    from tests.test_rules_match import ev

    short = ev({"duration": 60})
    bound = rules.rules[0].condition.matcher
    short.cache[(id(bound), "duration")] = (object(), True)  # another matcher's result under a reused id
    assert [str(v.failure) for v in rules.evaluate(short)] == ["duration should be > 240: saw 60 (line 4)"]
