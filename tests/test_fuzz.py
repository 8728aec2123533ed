"""Hostile input, fuzzed: the real webhook path under gunicorn, and the rule loader.

`make test` tries FUZZ_EXAMPLES cases per property (2,000+ through the webhook in all);
REACTOR_FUZZ_EXAMPLES=50000 make test is the long, opt-in run.
"""
from __future__ import annotations

import json
import os
import time

import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from reactor.errors import RulesError
from reactor.events import decimal_id
from reactor.rules.load import load_rules
from tests.conftest import ReactorServer, log_records, signed_headers

EXAMPLES = int(os.environ.get("REACTOR_FUZZ_EXAMPLES", "1000"))
LONG_RUN = "REACTOR_FUZZ_EXAMPLES" in os.environ
# make test replays the same cases every run (a red CI must mean a change broke something);
# the long run draws new ones.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG_RUN,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

CATCH_ALL = """
rules:
  - name: Any start
    on: [meeting.started, webinar.started, meeting.ended]
    do: [livestream.start]
  - name: Globs and regexes on anything
    on: meeting.started
    when:
      any:
        - topic: {glob: "*T*"}
        - topic: {regex: "(a|b)+c"}
        - participant.email: {exists: true}
        - duration: {gt: 5}
    do: [livestream.stop]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ReactorServer(tmp_path_factory.mktemp("fuzz"), CATCH_ALL, env={"WEB_CONCURRENCY": "2"})
    srv.start()
    srv.session = requests.Session()
    yield srv
    srv.stop()


def post(server, raw: bytes, headers: dict):
    return server.session.post(server.url + "/webhooks/zoom", data=raw, headers=headers, timeout=10)


json_scalars = st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
ids = st.one_of(st.integers(min_value=-5, max_value=10**25), st.text(max_size=25),
                st.from_regex(r"\A[0-9]{9,12}\Z"), st.none(), st.booleans(), st.floats(allow_nan=False), json_values)
event_names = st.sampled_from(["meeting.started", "meeting.ended", "webinar.started", "meeting.participant_joined",
                               "endpoint.url_validation", "meeting.live_streaming_started"]) | st.text(max_size=30)
objects = st.fixed_dictionaries({}, optional={
    "id": ids, "uuid": json_values, "topic": json_values | st.text(), "host_id": json_values,
    "duration": json_values, "participant": json_values, "live_streaming": json_values}) | json_values
envelopes = st.fixed_dictionaries({"event": event_names | json_values}, optional={
    "event_ts": st.integers(min_value=-10**20, max_value=10**20) | json_values,
    "payload": st.fixed_dictionaries({}, optional={"object": objects, "account_id": json_values,
                                                   "plainToken": json_values}) | json_values})


printable = st.characters(min_codepoint=32, max_codepoint=126)  # other bytes are invalid HTTP: gunicorn's own 400


@FUZZ
@given(body=st.binary(max_size=2000), ts=st.text(printable, max_size=20) | st.none(),
       sig=st.text(printable, max_size=80) | st.none(),
       extra=st.dictionaries(st.from_regex(r"\Ax-[a-z-]{1,12}\Z"), st.text(
           alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30), max_size=3))
def test_unsigned_noise_is_401_4xx_and_stores_nothing(server, body, ts, sig, extra):
    headers = {k: v.strip() or "-" for k, v in extra.items()}
    if ts is not None:
        headers["x-zm-request-timestamp"] = ts.strip() or "0"
    if sig is not None:
        headers["x-zm-signature"] = sig.strip() or "v0="
    response = post(server, body, headers)
    assert response.status_code in (400, 401, 413), response.text
    assert response.json()["error"]


@FUZZ
@given(body=envelopes)
def test_signed_garbage_never_5xx_and_acts_only_on_real_meeting_ids(server, body):
    raw = json.dumps(body).encode()
    response = post(server, raw, signed_headers(raw))
    assert response.status_code < 500, response.text
    if response.status_code == 200 and "delivery" in response.json() and server.outcome(response)["actions"]:
        payload = body.get("payload")
        obj = payload.get("object") if isinstance(payload, dict) else None
        assert isinstance(obj, dict) and decimal_id(obj.get("id")), "an action needs a real meeting id"


@FUZZ
@given(text=st.text(max_size=300), dup=st.booleans())
def test_signed_raw_text_with_odd_encodings_never_5xx(server, text, dup):
    raw = ('{"event": "meeting.started", "event": "meeting.ended", "payload": {"object": {"id": "1", "id": "2"}}, '
           '"x": ' + json.dumps(text) + "}") if dup else text
    for encoding in ("utf-8", "utf-16", "latin-1"):
        data = raw.encode(encoding, "replace")
        response = post(server, data, signed_headers(data))
        assert response.status_code < 500, response.text


def test_deep_and_huge_signed_bodies(server):
    for raw in (b'{"a":' * 10000 + b"1" + b"}" * 10000, b'{"event":"meeting.started","n":' + b"9" * 5000 + b"}",
                b'{"event":"meeting.started","payload":{"object":{"id":' + b"1" * 400 + b'}}}'):
        response = post(server, raw, signed_headers(raw))
        assert 400 <= response.status_code < 500 or response.status_code == 200, response.text


def test_server_is_healthy_and_nothing_broke_after_the_fuzzing(server):
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    # Read as lines and messages, not as text: a fuzzed event named "unexpected error" (Hypothesis draws
    # strings from the code's own literals) is logged inside an "accepted" line, and is no error.
    assert not [line for line in server.logs().splitlines() if line.startswith("Traceback")]
    errors = [record for record in log_records(server) if "unexpected error" in record.get("msg", "")]
    assert not errors


def test_replay_within_tolerance_is_a_duplicate_outside_it_a_401(server):
    body = {"event": "meeting.started", "event_ts": int(time.time() * 1000),
            "payload": {"account_id": "a", "object": {"id": "77700000001", "uuid": "replay-uuid"}}}
    raw = json.dumps(body).encode()
    headers = signed_headers(raw)
    assert post(server, raw, headers).json()["status"] == "accepted"
    assert server.outcome(post(server, raw, headers))["status"] == "duplicate"  # the very same request, replayed
    stale = signed_headers(raw, timestamp=int(time.time()) - 7201)  # the default window is two hours
    assert post(server, raw, stale).status_code == 401


# -- rule files ------------------------------------------------------------------------------

rule_keys = st.sampled_from(["name", "on", "when", "do", "enabled", "examples", "wehn", "description"])
matcher_ops = st.sampled_from(["equals", "in", "glob", "regex", "exists", "gt", "gte", "lt", "lte", "not", "globb"])
yaml_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=12) | \
    st.sampled_from(["on", "NO", "0800", "yes", "(", "[a-", "*", "12:00", "Europe/Berlin", "${HOME}", "enc:x",
                     "{{ topic }}", "livestream.start", "meeting.started"])
yaml_trees = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3) |
                          st.dictionaries(matcher_ops | rule_keys | st.text(max_size=8), inner, max_size=3),
                          max_leaves=25)
rule_shapes = st.fixed_dictionaries({"rules": st.lists(st.dictionaries(rule_keys, yaml_trees, max_size=6), max_size=3)})


def _load(tmp_path, text: str):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        return load_rules(path, env={"HOME": "/root"})
    except RulesError as exc:
        assert exc.problems and all(p.startswith(str(path)) for p in exc.problems), exc.problems
        return None


@FUZZ
@given(doc=rule_shapes)
def test_rule_shaped_yaml_loads_or_fails_cleanly(tmp_path, doc):
    _load(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(text=st.text(max_size=400))
def test_arbitrary_text_as_a_rule_file_fails_cleanly(tmp_path, text):
    _load(tmp_path, "\x00" not in text and text or "x")


def test_billion_laughs_is_refused(tmp_path):
    lol = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + n)}: &{chr(98 + n)} [*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, "
        f"*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}]\n" for n in range(8))
    started = time.time()
    assert _load(tmp_path, lol) is None
    assert time.time() - started < 5
