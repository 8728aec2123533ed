"""The rule language, table-driven: matchers, combinators, paths, windows, actions (pure)."""
import json
import textwrap

import pytest

from reactor.events import event_from_body
from reactor.plan import plan
from reactor.rules.load import load_rules
from reactor.rules import match
from reactor.rules.match import encode_verdict, encode_verdicts


# On participant_joined too, so that participant.* paths are fields the rule's events carry.
def ruleset(tmp_path, when: str = "", on: str = "[meeting.started, meeting.participant_joined]",
            do: str = "[livestream.stop]", extra: str = ""):
    text = f"rules:\n  - name: r\n    on: {on}\n"
    if when:
        text += "    when:\n" + textwrap.indent(textwrap.dedent(when).strip("\n"), "      ") + "\n"
    text += f"    do: {do}\n" + extra
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_rules(path, env={"KEY": "the-key"})


def ev(obj=None, name="meeting.started", ts=1764176405123, **root):
    base = {"id": "85746065432", "uuid": "u1", "host_id": "hostA", "topic": "Town Hall - November",
            "duration": 60, "host_email": "host@example.com"}
    base.update(obj or {})
    body = {"event": name, "event_ts": ts, "payload": {"account_id": "acc1", "object": base}}
    body.update(root)
    return event_from_body(body, json.dumps(body).encode())


def matches(rules, event) -> bool:
    full = [v.rule.name for v in rules.explain(event) if v.matched]
    fast = [r.name for r in rules.matching(event)]
    assert full == fast, "the index must agree with a full scan"
    return bool(fast)


CASES = [
    # (id, when, object overrides, expected)
    ("equals-string", "topic: Town Hall - November", {}, True),
    ("equals-string-miss", "topic: Town Hall", {}, False),
    ("equals-case-sensitive", "topic: town hall - november", {}, False),
    ("id-number-vs-string", "id: 85746065432", {}, True),
    ("id-string-vs-number", "id: '85746065432'", {"id": 85746065432}, True),
    ("id-number-vs-number", "id: 85746065432", {"id": 85746065432}, True),
    ("id-other", "id: 85746065433", {}, False),
    ("id-beyond-float", "id: 12345678901234567891", {"id": 12345678901234567890}, False),
    ("id-beyond-float-equal", "id: 12345678901234567891", {"id": "12345678901234567891"}, True),
    ("duration-decimal", "duration: 60.0", {}, True),
    ("list-any", "host_id: [hostB, hostA]", {}, True),
    ("list-none", "host_id: [hostB, hostC]", {}, False),
    ("in", "host_id: {in: [hostA]}", {}, True),
    ("equals-op", "host_id: {equals: hostA}", {}, True),
    ("glob", "topic: {glob: 'town hall*'}", {}, True),
    ("glob-miss", "topic: {glob: 'Board*'}", {}, False),
    ("glob-question", "topic: {glob: 'Town Hall - ???????*'}", {}, True),
    ("regex", "topic: {regex: 'Nov(ember)?$'}", {}, True),
    ("regex-search-not-match", "topic: {regex: 'Hall'}", {}, True),
    ("regex-miss", "topic: {regex: '^Hall'}", {}, False),
    ("exists", "host_email: {exists: true}", {}, True),
    ("exists-missing", "participant.email: {exists: true}", {}, False),
    ("not-exists", "participant.email: {exists: false}", {}, True),
    ("not-exists-present", "host_email: {exists: false}", {}, False),
    ("gt", "duration: {gt: 59}", {}, True),
    ("gte", "duration: {gte: 60}", {}, True),
    ("lt", "duration: {lt: 60}", {}, False),
    ("lte-string-number", "duration: {lte: 60}", {"duration": "60"}, True),
    ("gt-not-number", "topic: {gt: 1}", {}, False),
    ("range", "duration: {gt: 30, lt: 90}", {}, True),
    ("not-matcher", "topic: {not: {glob: 'Board*'}}", {}, True),
    ("not-matcher-missing", "participant.email: {not: {glob: '*@x.org'}}", {}, False),
    ("missing-field-never-matches", "participant.email: guest@example.org", {}, False),
    ("nested-path", "participant.email: {glob: '*@example.org'}", {"participant": {"email": "guest@example.org"}}, True),
    ("root-path-account", "payload.account_id: acc1", {}, True),
    ("root-path-event", "event: meeting.started", {}, True),
    ("root-path-event-ts", "event_ts: {gt: 1000}", {}, True),
    ("unicode-topic", "topic: {glob: 'Gottesdienst ☕*'}", {"topic": "Gottesdienst ☕ 🎥 Sonntag"}, True),
    ("unicode-equals", "topic: Füße", {"topic": "Füße"}, True),
    ("on-is-a-key-and-NO-a-string", "topic: NO", {"topic": "NO"}, True),
    ("leading-zero-stays-string", "topic: 0800", {"topic": "0800"}, True),
    ("yes-is-a-string", "topic: yes", {"topic": "yes"}, True),
    ("yes-is-not-true", "topic: yes", {"topic": True}, False),
    ("bool-true", "payload.object.flag: true", {"flag": True}, True),
    ("bool-not-string", "payload.object.flag: true", {"flag": "true"}, False),
    ("null", "payload.object.flag: null", {"flag": None}, True),
    ("all", "all:\n  - topic: {glob: 'Town*'}\n  - duration: 60", {}, True),
    ("all-one-fails", "all:\n  - topic: {glob: 'Town*'}\n  - duration: 61", {}, False),
    ("any", "any:\n  - topic: Board\n  - duration: 60", {}, True),
    ("any-none", "any:\n  - topic: Board\n  - duration: 61", {}, False),
    ("not", "not:\n  topic: {glob: 'Board*'}", {}, True),
    ("not-fails", "not:\n  topic: {glob: 'Town*'}", {}, False),
    ("nested-combinators", "any:\n  - all:\n      - topic: Board\n  - not:\n      any:\n        - duration: 1\n        - duration: 2",
     {}, True),
    ("contains", "topic: {contains: 'hall - nov'}", {}, True),
    ("contains-brackets", "topic: {contains: '[private]'}", {"topic": "Board [Private] sync"}, True),
    ("contains-miss", "topic: {contains: '[private]'}", {"topic": "Board private sync"}, False),
    ("contains-number", "id: {contains: 574606}", {}, True),
    ("contains-missing-field", "participant.email: {contains: '@'}", {}, False),
    ("not-contains", "topic: {not: {contains: '[private]'}}", {}, True),
    ("glob-escaped-bracket", "topic: {glob: '*[[]private]*'}", {"topic": "Board [private] sync"}, True),
    ("glob-escaped-bracket-is-text", "topic: {glob: '*[[]private]*'}", {"topic": "Board for partners"}, False),
    ("glob-word-class-is-one-letter", "topic: {glob: '*[private]*'}", {"topic": "Town Hall"}, True),
    ("topic-is-object", "topic: {glob: '*'}", {"topic": {"a": 1}}, False),
    ("list-value-in-event", "host_id: [hostA]", {"host_id": ["hostA"]}, False),
]


@pytest.mark.parametrize("when,overrides,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matchers_and_combinators(tmp_path, when, overrides, expected):
    assert matches(ruleset(tmp_path, when), ev(overrides)) is expected


# event_ts values: 2025-11-26 (Wed) 17:00:05 UTC = 18:00 Berlin.
WED_1800_BERLIN = 1764176405123
SAT_0100_BERLIN = 1764374400000 + 0          # 2025-11-29 00:00 UTC = 01:00 Berlin (Sat)
DST_SPRING_0330_BERLIN = 1774747800000       # 2026-03-29 01:30 UTC = 03:30 CEST (after the jump)
SUN_1130_BERLIN = 1764498600000              # 2025-11-30 10:30 UTC
MON_1100_BERLIN = 1764583200000              # 2025-12-01 10:00 UTC

WINDOWS = [
    ("inside", "during: {from: '17:00', to: '19:00', timezone: Europe/Berlin}", WED_1800_BERLIN, True),
    ("outside", "during: {from: '09:00', to: '17:00', timezone: Europe/Berlin}", WED_1800_BERLIN, False),
    ("utc-default", "during: {from: '17:00', to: '17:01'}", WED_1800_BERLIN, True),
    ("day-listed", "during: {days: [wed], from: '17:00', to: '19:00', timezone: Europe/Berlin}", WED_1800_BERLIN, True),
    ("day-not-listed", "during: {days: [mon, tue], from: '17:00', to: '19:00', timezone: Europe/Berlin}",
     WED_1800_BERLIN, False),
    ("across-midnight-after", "during: {days: [fri], from: '22:00', to: '02:00', timezone: Europe/Berlin}",
     SAT_0100_BERLIN, True),
    ("across-midnight-wrong-day", "during: {days: [sat], from: '22:00', to: '02:00', timezone: Europe/Berlin}",
     SAT_0100_BERLIN, False),
    ("across-midnight-before", "during: {from: '17:30', to: '02:00', timezone: Europe/Berlin}", WED_1800_BERLIN, True),
    ("dst-local-time-after-spring-jump", "during: {from: '03:00', to: '04:00', timezone: Europe/Berlin}",
     DST_SPRING_0330_BERLIN, True),
    ("dst-utc-would-be-wrong", "during: {from: '01:00', to: '02:00', timezone: Europe/Berlin}",
     DST_SPRING_0330_BERLIN, False),
    ("other-zone", "during: {from: '09:00', to: '10:00', timezone: America/Los_Angeles}", WED_1800_BERLIN, True),
    ("range-mon-fri-wed", "during: {days: [mon-fri], from: '17:00', to: '19:00', timezone: Europe/Berlin}",
     WED_1800_BERLIN, True),
    ("range-mon-fri-not-sat", "during: {days: mon-fri, from: '00:00', to: '00:00', timezone: Europe/Berlin}",
     SAT_0100_BERLIN, False),
    ("range-full-names", "during: {days: [Monday-Friday], from: '17:00', to: '19:00', timezone: Europe/Berlin}",
     WED_1800_BERLIN, True),
    ("range-fri-mon-wraps-sun", "during: {days: [fri-mon], from: '00:00', to: '00:00', timezone: Europe/Berlin}",
     SUN_1130_BERLIN, True),
    ("range-fri-mon-wraps-mon", "during: {days: [fri-mon], from: '00:00', to: '00:00', timezone: Europe/Berlin}",
     MON_1100_BERLIN, True),
    ("range-fri-mon-not-wed", "during: {days: [fri-mon], from: '00:00', to: '00:00', timezone: Europe/Berlin}",
     WED_1800_BERLIN, False),
    ("range-and-day", "during: {days: [sat-sun, wed], from: '17:00', to: '19:00', timezone: Europe/Berlin}",
     WED_1800_BERLIN, True),
]


@pytest.mark.parametrize("when,ts,expected", [w[1:] for w in WINDOWS], ids=[w[0] for w in WINDOWS])
def test_time_windows(tmp_path, when, ts, expected):
    assert matches(ruleset(tmp_path, when), ev(ts=ts)) is expected


def test_window_without_event_ts_does_not_match(tmp_path):
    rules = ruleset(tmp_path, "during: {from: '00:00', to: '00:00'}")
    body = {"event": "meeting.started", "payload": {"object": {"id": "1"}}}
    assert not matches(rules, event_from_body(body, b"{}"))


def test_on_list_and_other_events(tmp_path):
    rules = ruleset(tmp_path, on="[meeting.started, webinar.started]")
    assert matches(rules, ev(name="webinar.started"))
    assert not matches(rules, ev(name="meeting.ended"))


def test_disabled_rule_never_matches(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  - name: r\n    on: meeting.started\n    enabled: false\n    do: livestream.stop\n")
    assert not matches(load_rules(path), ev())


ACTIONS = [
    ("start-settings", "[{livestream.start: {display_name: 'Live: {{ topic }}', active_speaker_name: false, "
                       "layout: follow_host, close_caption: burnt-in}}]", "meeting.started",
     [("PATCH", "/meetings/85746065432/livestream/status",
       {"action": "start", "settings": {"display_name": "Live: Town Hall - November", "active_speaker_name": False,
                                        "layout": "follow_host", "close_caption": "burnt-in"}})]),
    ("start-bare", "[livestream.start]", "meeting.started",
     [("PATCH", "/meetings/85746065432/livestream/status", {"action": "start", "settings": {}})]),
    ("stop", "livestream.stop", "meeting.started",
     [("PATCH", "/meetings/85746065432/livestream/status", {"action": "stop"})]),
    ("webinar", "[livestream.stop]", "webinar.started",
     [("PATCH", "/webinars/85746065432/livestream/status", {"action": "stop"})]),
    ("configure-then-start", "[{livestream.configure: {stream_url: 'rtmp://x/live', stream_key: '${KEY}', "
                             "page_url: 'https://x', resolution: 720p}}, livestream.start]", "meeting.started",
     [("PATCH", "/meetings/85746065432/livestream",
       {"stream_url": "rtmp://x/live", "stream_key": {"$secret": "${KEY}"}, "page_url": "https://x",
        "resolution": "720p"}),
      ("PATCH", "/meetings/85746065432/livestream/status", {"action": "start", "settings": {}})]),
    ("template-missing-field", "[{livestream.start: {display_name: '{{ payload.object.nothing }}x'}}]", "meeting.started",
     [("PATCH", "/meetings/85746065432/livestream/status", {"action": "start", "settings": {"display_name": "x"}})]),
    ("display-name-truncated", "[{livestream.start: {display_name: '{{ topic }}{{ topic }}{{ topic }}'}}]",
     "meeting.started",
     [("PATCH", "/meetings/85746065432/livestream/status",
       {"action": "start", "settings": {"display_name": ("Town Hall - November" * 3)[:50]}})]),
]


@pytest.mark.parametrize("do,name,expected", [a[1:] for a in ACTIONS], ids=[a[0] for a in ACTIONS])
def test_actions_plan_zoom_calls(tmp_path, do, name, expected):
    rules = ruleset(tmp_path, on=name, do=do)
    event = ev(name=name)
    actions, skipped = plan(event, rules.matching(event))
    assert [(a.method, a.path, a.body) for a in actions] == expected
    assert all(a.order_key == f"{'webinars' if name.startswith('webinar') else 'meetings'}/85746065432"
               for a in actions)


def test_big_ids_keep_every_digit(tmp_path):
    rules = ruleset(tmp_path)
    event = ev({"id": 98765432109876543})
    [action], _ = plan(event, rules.matching(event))
    assert action.path == "/meetings/98765432109876543/livestream/status"


def test_event_without_id_plans_nothing_and_says_why(tmp_path):
    rules = ruleset(tmp_path)
    event = ev({"id": None})
    actions, skipped = plan(event, rules.matching(event))
    assert actions == [] and "no meeting or webinar id" in skipped[0].reason


def test_index_prefers_selective_fields_and_agrees_with_scan(tmp_path):
    lines = ["rules:"]
    for n in range(300):
        lines += [f"  - name: by-id-{n}", "    on: meeting.started", f"    when: {{id: {10_000_000_000 + n}}}",
                  "    do: [livestream.start]"]
    for n in range(20):
        lines += [f"  - name: by-glob-{n}", "    on: meeting.started", f"    when: {{topic: {{glob: 'T{n}*'}}}}",
                  "    do: [livestream.start]"]
    lines += ["  - name: by-host", "    on: meeting.started", "    when: {host_id: [hostA, hostB], id: {gt: 5}}",
              "    do: [livestream.start]"]
    path = tmp_path / "many.yaml"
    path.write_text("\n".join(lines) + "\n")
    rules = load_rules(path)
    event = ev({"id": str(10_000_000_042), "topic": "T7 weekly"})
    assert [r.name for r in rules.matching(event)] == ["by-id-42", "by-glob-7", "by-host"]
    assert len(rules.candidates(event)) == 1 + 1 + 1  # one id bucket, the glob whose prefix fits, the host bucket
    miss = ev({"id": "5", "topic": "nothing like it", "host_id": "nobody"})
    assert rules.candidates(miss) == [], "no glob's literal prefix fits: none is tested"
    assert matches(rules, ev({"id": "5", "topic": "t7 ÜBER"})), "any case, any script"
    assert matches(rules, event)


def test_a_rule_found_by_its_equality_is_judged_as_if_every_check_were_tested(tmp_path):
    """The index skips the check its bucket already made (a plain value or `in`), and only that one: each
    verdict, and the first failing check it names, is what testing the whole condition says."""
    lines = ["rules:"]
    whens = ["{host_id: h1, duration: {gt: 240}}", "{duration: {gt: 240}, host_id: h1}", "{host_id: [h0, h1]}",
             "{host_id: h1}", "{host_id: {equals: h1, glob: 'x*'}}", "{topic: Weekly, host_id: h1, type: 8}",
             "{all: [{host_id: h1}, {duration: {lt: 10}}], topic: {contains: sync}}", "{host_id: h1, id: '42'}",
             "{host_id: {in: [h1]}, topic: {not: Weekly}}"]
    for n, when in enumerate(whens):
        lines += [f"  - name: r{n}", "    on: meeting.started", f"    when: {when}", "    do: [livestream.start]"]
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(lines) + "\n")
    rules = load_rules(path)
    for obj in ({"host_id": "h1", "duration": 60, "topic": "Weekly"}, {"host_id": "h1", "duration": 300, "type": 8},
                {"host_id": "h1", "id": "42", "topic": "sync"}, {"host_id": "h0", "duration": 5, "topic": "x sync"}):
        event = ev(obj)
        verdicts = rules.evaluate(event)
        whole = [rule.condition.failure(event) for _, rule, _ in rules.candidates(event)]
        assert [v.failure for v in verdicts] == whole, obj
    weekly = ev({"host_id": "h1", "duration": 60, "topic": "Weekly"})
    assert [rule.name for _, rule, _ in rules.candidates(weekly)] == ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r8"]
    assert [str(v.failure) for v in rules.evaluate(weekly)][:2] == ["duration should be > 240: saw 60 (line 4)",
                                                                   "duration should be > 240: saw 60 (line 8)"]
    long = ev({"host_id": "h1", "duration": 300, "type": 8})
    assert [v.rule.name for v in rules.evaluate(long) if v.matched] == ["r0", "r1", "r2", "r3", "r8"]


def test_glob_prefixes_of_different_lengths_list_each_rule_once(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("rules:\n" + "".join(
        f"  - name: g{n}\n    on: meeting.started\n    when: {{topic: {{glob: '{p}'}}}}\n    do: [livestream.stop]\n"
        for n, p in enumerate(["Plain*", "Town Hall*", "*", "P*", "Plain"])))
    rules = load_rules(path)
    assert [r.name for r in rules.matching(ev({"topic": "Plain"}))] == ["g0", "g2", "g3", "g4"]
    assert matches(rules, ev({"topic": "Pla"}))


@pytest.mark.parametrize("pattern,topic,expected", [
    ("Hall*", "Town Hall", False), ("*Hall", "Town Hall", True), ("Town Hall", "town hall", True),
    ("Town", "Town Hall", False), ("T?wn*", "Town Hall", True), ("[Tt]own*", "town", True),
], ids=["glob-is-anchored-at-start", "glob-star-prefix", "glob-ignores-case", "glob-is-anchored-at-end",
        "glob-question-mark", "glob-class"])
def test_glob_matches_the_whole_value(tmp_path, pattern, topic, expected):
    assert matches(ruleset(tmp_path, f"topic: {{glob: '{pattern}'}}"), ev({"topic": topic})) is expected


def test_planned_action_round_trips_through_json(tmp_path):
    from dataclasses import fields
    from reactor.plan import PlannedAction
    rules = ruleset(tmp_path, do="[{livestream.start: {display_name: x}}]")
    [action], _ = plan(ev(), rules.matching(ev()))
    assert list(action.to_dict()) == [f.name for f in fields(PlannedAction)]
    assert PlannedAction.from_dict(json.loads(json.dumps(action.to_dict()))) == action


def test_a_rule_on_meetings_and_webinars_sends_meeting_settings_to_meetings_only(tmp_path):
    """Trap 5 / #12 item 5: Zoom's webinar live stream status takes display_name and active_speaker_name only."""
    rules = ruleset(tmp_path, on="[meeting.started, webinar.started]",
                    do="[{livestream.start: {display_name: x, layout: gallery_view, close_caption: embedded, "
                       "active_speaker_name: true}}]")
    meeting, webinar = ev(), ev(name="webinar.started")
    [to_meeting], _ = plan(meeting, rules.matching(meeting))
    [to_webinar], _ = plan(webinar, rules.matching(webinar))
    assert to_meeting.body["settings"] == {"display_name": "x", "layout": "gallery_view", "close_caption": "embedded",
                                           "active_speaker_name": True}
    assert (to_webinar.path, to_webinar.body) == ("/webinars/85746065432/livestream/status", {
        "action": "start", "settings": {"display_name": "x", "active_speaker_name": True}})


@pytest.mark.parametrize("template,overrides,expected", [
    ("{{ host_email }}", {"host_email": ""}, "Town Hall - November"),
    ("{{ host_email }}", {"host_email": "", "topic": "  "}, "Live stream"),
    ("{{ host_email }}", {"host_email": "", "topic": None}, "Live stream"),
    ("  {{ host_email }} ", {"host_email": None, "topic": "T" * 60}, "T" * 50),
    ("On air: {{ host_email }}", {"host_email": ""}, "On air: "),
], ids=["empty-to-topic", "blank-topic", "no-topic", "fallback-cut-to-50", "fixed-text-kept"])
def test_display_name_that_renders_empty_falls_back(tmp_path, template, overrides, expected):
    rules = ruleset(tmp_path, do=f"[{{livestream.start: {{display_name: '{template}'}}}}]")
    [action], _ = plan(ev(overrides), rules.matching(ev(overrides)))
    assert action.body["settings"]["display_name"] == expected


def test_file_level_unless_excludes_in_matching_and_the_index_agrees(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("unless:\n  any:\n    - topic: {contains: '[private]'}\n    - host_id: blocked\n"
                    "rules:\n  - name: by-id\n    on: meeting.started\n    when: {id: 85746065432}\n"
                    "    do: [livestream.stop]\n  - name: by-glob\n    on: meeting.started\n"
                    "    when: {topic: {glob: 'Town*'}}\n    do: [livestream.stop]\n"
                    "  - name: bare\n    on: meeting.started\n    do: [livestream.stop]\n")
    rules = load_rules(path)
    assert matches(rules, ev()) and [r.name for r in rules.matching(ev())] == ["by-id", "by-glob", "bare"]
    for excluded in ({"topic": "Town Hall [Private]"}, {"host_id": "blocked"}):
        assert not matches(rules, ev(excluded)), excluded
    assert len(rules.candidates(ev())) == 3, "the unless does not take the rules out of the index"
    [verdict, *_] = rules.explain(ev({"host_id": "blocked"}))
    assert str(verdict.failure).startswith(f"excluded by file-level unless ({path}:1): any of (topic contains "
                                           "'[private]'; host_id equals 'blocked')")


def assert_encoded_as_evaluated(rules, event, account=None, matched_why=""):
    """encoded() gives the rules evaluate() matched and, as the history stores them, the same verdicts."""
    expected = history_verdicts(rules, event, account, matched_why)
    matched, texts = rules.encoded(event, account, matched_why)
    assert (matched, encode_verdicts(texts)) == (expected[0], encode_verdicts(expected[1])), (event.body, account)
    return matched, expected


def history_verdicts(rules, event, account=None, matched_why=""):
    """What evaluate() says, as the history stores it: the rules that matched, and each verdict's text."""
    verdicts = rules.evaluate(event, account)
    return ([v.rule for v in verdicts if v.matched],
            [encode_verdict(v.rule.name, v.matched, matched_why if v.matched else str(v.failure)) for v in verdicts])


def test_the_history_verdicts_are_those_evaluate_gives_word_for_word(tmp_path):
    """encoded() (what the ingester stores) tests rules with the same checks once, as a group, and writes a
    miss as its rule's text around the value seen: every verdict is still evaluate()'s, in file order."""
    rules_text = ["rules:"]
    whens = ["{host_id: h1, duration: {gt: 240}}"] * 3 + [  # a template: one group
        "{host_id: h1, duration: {gt: 240}, type: 8}", "{host_id: h1, type: 8, duration: {gt: 240}}",  # parts' order
        "{host_id: h1, topic: {glob: 'Town*'}}", "{topic: {glob: 'Town*'}}", "{topic: {glob: 'Town*Series 2'}}",
        "{topic: {regex: 'Hall'}, duration: {lte: 60}}", "{any: [{host_id: h2}, {duration: {gt: 1}}]}",
        "{not: {host_id: h1}}", "{host_email: {contains: EXAMPLE}}", "{password: {exists: false}}",
        "{payload.object.password: {exists: true}}", "{settings: {exists: true}, host_id: h1}", "",
        "{all: [{host_id: h1}, {all: [{type: 8}]}], duration: {gt: 240}}"]
    names = ["plain", 'quote \\" and \\\\ backslash', "Ünïcödé ✓", "emoji 🎥", "\\0seen\\0 in the name", "tab\\there"]
    for n, when in enumerate(whens):
        name = names[n % len(names)]
        rules_text += [f'  - name: "{name} {n}"', "    on: [meeting.started, meeting.participant_joined]",
                       f"    when: {when}" if when else "    # no when: every event", "    do: [livestream.start]"]
        if n in (1, 6):
            rules_text.append("    account: [emea]")
    (tmp_path / "a.yaml").write_text("\n".join(rules_text) + "\n")  # and the same rules under a file-level unless
    (tmp_path / "b.yaml").write_text("unless: {topic: {contains: '[private]'}}\n" + "\n".join(rules_text).replace('name: "', 'name: "b ') + "\n")
    rules = load_rules(tmp_path, accounts=("emea", "apac"))
    topics = ["Town Hall Series 2", "town hall", "Weekly [Private]", "Ŧown ✓ " * 20, "\ud83d cut", 42, None, "ſeries"]
    events = [ev({"host_id": host, "duration": duration, "topic": topic, "type": 2 if duration == 300 else 8,
                  "password": "s3cret", "settings": {"password": "p"}})
              for host in ("h1", "h2") for duration in (30, 60, 300, "300", None) for topic in topics]
    events += [ev({"host_id": "h1"}, name="meeting.participant_joined"), ev({"topic": {"nested": [1]}})]
    seen = set()
    for event in events:
        for account in (None, "emea", "apac"):
            for why in ("", "another account's event"):
                _, expected = assert_encoded_as_evaluated(rules, event, account, why)
                seen.update(json.loads(text)["why"].split(":")[0] for text in expected[1])
    assert {"duration should be > 240", "type should equal '8'", "any", "not", "topic should match glob 'Town*'",
            "password should not exist", "the event is account apac's, the rule is for emea",
            "excluded by file-level unless (" + str(tmp_path / "b.yaml")} <= seen
    assert any("<redacted>" in text for text in history_verdicts(rules, events[0])[1]), "a secret is shown redacted"


@pytest.mark.parametrize("kept", [32, 1])
def test_globs_on_one_field_tested_together_still_give_each_rule_its_verdict(tmp_path, monkeypatch, kept):
    """Many globs on one field (here seven sharing the prefix 'town hall') are tested as one expression,
    and a list's verdicts are made from pieces kept per outcome: every rule still gets its own verdict, in
    file order, word for word as evaluate() gives it, whichever and however many globs match, and whether
    or not another list's candidates (a host's, a meeting's) fall between them in the file; also once a
    list keeps as many outcomes as it may (`kept`), when the others are made one verdict at a time."""
    monkeypatch.setattr(match, "TEMPLATES", kept)
    globs = ["Town Hall*", "town hall*Series 2", "Town Hall ?eries*", "Town Hall*[0-9]", "Town Hall [!S]*",
             "Town Hall", "TOWN HALL*bench"]
    rules_text = ["rules:"]
    for n, glob in enumerate(globs):
        rules_text += [f"  - name: glob {n}", "    on: meeting.started", f"    when: {{topic: {{glob: '{glob}'}}}}",
                       "    do: [livestream.start]",
                       f"  - name: host {n}", "    on: meeting.started", "    when: {host_id: h1, duration: {gt: 240}}",
                       "    do: [livestream.start]"]
        if n == 3:
            rules_text += ["  - name: meeting", "    on: meeting.started", "    when: {id: 42, duration: {lte: 60}}",
                           "    do: [livestream.start]"]
    (tmp_path / "rules.yaml").write_text("\n".join(rules_text) + "\n")
    rules = load_rules(tmp_path)
    topics = ["Town Hall", "Town Hall Series 2", "town hall series 9", "Town Hall Xmas bench", "TOWN HALL",
              "Town Hallway", "Ŧown Hall", "Weekly", 42, None, "Town Hall " + "x" * 2000 + " bench"]
    seen_matches = set()
    for topic in topics:
        for meeting in ("42", "7"):
            for duration in (30, 300):
                for _ in range(2):  # the second time from the pieces kept for that outcome
                    event = ev({"id": meeting, "host_id": "h1", "duration": duration, "topic": topic})
                    matched, _ = assert_encoded_as_evaluated(rules, event)
                    seen_matches.add(len([r for r in matched if r.name.startswith("glob")]))
    assert {0, 1, 2, 3} <= seen_matches, "no glob, one, and several at once"
    (tmp_path / "many").mkdir()  # twelve globs that all match: past the expressions kept, one by one
    (tmp_path / "many" / "rules.yaml").write_text("rules:\n" + "".join(
        f"  - name: all {n}\n    on: meeting.started\n    when: {{topic: {{glob: 'Town Hall{'*' * (n + 1)}'}}}}\n"
        "    do: [livestream.start]\n" for n in range(12)))
    rules = load_rules(tmp_path / "many")
    for topic in ("Town Hall Series 2", "Weekly", "Town Hall"):
        matched, _ = assert_encoded_as_evaluated(rules, ev({"topic": topic}))
        assert len(matched) == (0 if topic == "Weekly" else 12)


def test_a_whole_number_has_the_same_equality_key_by_its_short_way():
    """eq_key keys a whole number (a meeting id, as a number or as ASCII digits) by its int without the
    cache: the key equals, and hashes as, the one the general way makes, so an index bucket finds it."""
    from decimal import Decimal

    from reactor.rules.model import _eq_key, eq_key

    for value in (0, 1, -5, 10**17, -10**17, 10**18, "0", "007", "85746065432", "123456789012345678",
                  "1234567890123456789", "-3", "5.0", 5.0, True, False, None, "", "٣", "7\n", Decimal(5)):
        short, general = eq_key(value), _eq_key.__wrapped__(value)
        assert short == general and hash(short) == hash(general), value
    assert eq_key("85746065432") == eq_key(85746065432) == eq_key(85746065432.0) != eq_key("85746065433")
