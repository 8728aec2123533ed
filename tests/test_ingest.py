"""The accept path under a real gunicorn: verified, durable, deduplicated, acknowledged."""
import hashlib
import hmac
import json
import sqlite3
import threading
import time

import pytest
import requests

from tests.conftest import SECRET, event, signed_headers


def count_deliveries(server) -> int:
    return len(server.history(limit=100000))


def test_valid_delivery_is_accepted_recorded_and_matched(make_server):
    server = make_server()
    body = event(topic="Town Hall - May")
    response = server.post(body)
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    [delivery] = server.history()
    assert delivery["event"] == "meeting.started"
    assert delivery["order_key"] == "meetings/85746065432"
    assert {"rule": "Stream town halls", "matched": True, "why": ""} in delivery["verdicts"]
    assert delivery["jobs"][0]["action"]["path"] == "/meetings/85746065432/livestream/status"


@pytest.mark.parametrize("case", ["wrong-secret", "no-headers", "no-signature", "old-timestamp", "future-timestamp",
                                  "tampered-body"])
def test_unverified_deliveries_get_401_and_store_nothing(make_server, case):
    server = make_server()
    body = json.dumps(event()).encode()
    headers = signed_headers(body)
    if case == "wrong-secret":
        headers = signed_headers(body, secret="not-the-secret")
    elif case == "no-headers":
        headers = {"content-type": "application/json"}
    elif case == "no-signature":
        del headers["x-zm-signature"]
    elif case in ("old-timestamp", "future-timestamp"):
        headers = signed_headers(body, timestamp=int(time.time()) + (-7300 if case == "old-timestamp" else 7300))
    elif case == "tampered-body":
        body = body.replace(b"Town Hall", b"Town Hell")
    response = requests.post(server.url + "/webhooks/zoom", data=body, headers=headers, timeout=5)
    assert response.status_code == 401
    assert "error" in response.json()
    assert count_deliveries(server) == 0
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


def test_a_chunked_body_over_1_mib_gets_413_and_a_get_405_with_allow(make_server):
    """Without a Content-Length the limit is found by reading one byte past it."""
    server = make_server()
    parts = iter([b'{"event": "meeting.started", "pad": "', b"x" * (600 * 1024), b"y" * (600 * 1024), b'"}'])
    response = requests.post(server.url + "/webhooks/zoom", data=parts, timeout=10,
                             headers={"x-zm-request-timestamp": str(int(time.time())), "x-zm-signature": "v0=00"})
    assert response.status_code == 413 and "1 MiB" in response.json()["error"]
    assert count_deliveries(server) == 0
    refused = requests.get(server.url + "/webhooks/zoom", timeout=5)
    assert refused.status_code == 405 and refused.headers["Allow"] == "POST"


def test_header_names_are_case_insensitive(make_server):
    server = make_server()
    raw = json.dumps(event()).encode()
    headers = {k.upper() if k.startswith("x-") else k: v for k, v in signed_headers(raw).items()}
    assert requests.post(server.url + "/webhooks/zoom", data=raw, headers=headers, timeout=5).status_code == 200


def test_url_validation_answers_the_hmac(make_server):
    server = make_server()
    body = {"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": int(time.time() * 1000),
            "event": "endpoint.url_validation"}
    response = server.post(body)
    assert response.status_code == 200
    expected = hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert response.json() == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}
    assert count_deliveries(server) == 0


def test_unsigned_url_validation_is_refused(make_server):
    server = make_server()
    raw = b'{"payload":{"plainToken":"abc"},"event":"endpoint.url_validation"}'
    response = requests.post(server.url + "/webhooks/zoom", data=raw, timeout=5)
    assert response.status_code == 401


@pytest.mark.parametrize("raw,status", [
    (b"{not json", 400),
    (b"[1, 2, 3]", 400),
    (b'"a string"', 400),
    (b"", 400),
    (b"\xff\xfe\x00", 400),
    (b'{"event": "meeting.started", "x": NaN}', 400),
    (b"[" * 5000 + b"]" * 5000, 400),
    (b'{"a":' * 100 + b"1" + b"}" * 100, 400),
    (b'{"event": 5}', 400),
    (b'{"payload": {}}', 400),
], ids=["malformed", "list", "string", "empty", "not-utf8", "nan", "deep-list", "deep-object", "event-number",
        "no-event"])
def test_bad_bodies_get_400_and_store_nothing(make_server, raw, status):
    server = make_server()
    response = server.post(None, raw=raw)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert count_deliveries(server) == 0


def test_huge_body_gets_413(make_server):
    server = make_server()
    raw = b'{"event": "meeting.started", "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    response = server.post(None, raw=raw)
    assert response.status_code == 413
    assert count_deliveries(server) == 0
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("obj", [
    "a string", None, 42, [], {"id": None}, {"id": 85746065432}, {"id": "85746065432"}, {"id": "not-a-number"},
    {"id": 1.5}, {"id": True}, {"topic": {"nested": ["deep"]}}, {"topic": "\u202e\U0001f3a5 T\u00f6wn H\u00e4ll"},
    {"id": 10**30}, {"uuid": 7},
], ids=["string", "null", "number", "list", "id-null", "id-number", "id-string", "id-text", "id-float", "id-bool",
        "topic-object", "unicode", "id-huge", "uuid-number"])
def test_odd_shapes_never_5xx(make_server, obj):
    server = make_server()
    body = {"event": "meeting.started", "event_ts": int(time.time() * 1000),
            "payload": {"account_id": "acc", "object": obj}}
    response = server.post(body)
    assert response.status_code < 500
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


def test_duplicate_with_fresh_signature_is_stored_once(make_server):
    server = make_server()
    body = event(topic="Town Hall")
    first = server.post(body)
    time.sleep(1.1)
    second = server.post(body)  # new timestamp and signature, same body
    assert first.status_code == second.status_code == 200
    assert server.outcome(second) == {**server.outcome(first), "status": "duplicate", "actions": 0}
    [delivery] = server.history()
    assert len(delivery["jobs"]) == 1


def test_simultaneous_duplicates_are_stored_once(make_server):
    server = make_server()
    body = event(topic="Town Hall")
    barrier = threading.Barrier(8)
    answers = []

    def post():
        barrier.wait()
        answers.append(server.post(body).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * 8
    [delivery] = server.history()
    assert len(delivery["jobs"]) == 1


def test_kill9_right_after_ack_keeps_the_event(make_server):
    server = make_server()
    bodies = [event(topic=f"Town Hall {n}") for n in range(20)]
    for body in bodies:
        assert server.post(body).status_code == 200
    server.kill9()
    server.start()
    recorded = {d["dedup_key"] for d in server.history(limit=1000)}
    assert {f"meeting.started:{b['payload']['object']['uuid']}" for b in bodies} <= recorded


def test_healthz_and_readyz(make_server):
    server = make_server()
    assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(server.url + "/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}  # the status only: details are in the log and the CLI


def test_database_unavailable_gives_503_then_recovers(make_server):
    server = make_server()
    blocker = sqlite3.connect(server.db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: reactor cannot commit
    try:
        started = time.time()
        response = server.post(event(topic="Town Hall"))
        assert response.status_code == 503
        assert "Zoom will retry" in response.json()["error"]
        assert time.time() - started < 3.0, "the 503 must come inside Zoom's 3 s deadline"
        time.sleep(1.6)  # past the answer /readyz reuses (1.5 s)
        ready = requests.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable"}
        assert "cannot take writes" in server.logs()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert count_deliveries(server) == 0
    assert server.post(event(topic="Town Hall")).status_code == 200
    deadline = time.time() + 5  # ready again once the reused answer has expired
    while requests.get(server.url + "/readyz", timeout=5).status_code != 200:
        assert time.time() < deadline, "reactor did not become ready again"
        time.sleep(0.1)
