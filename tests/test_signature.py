"""Signature checking, table-driven (pure: no server)."""
import hashlib
import hmac

import pytest

from reactor.errors import SignatureError
from reactor.signature import sign, url_validation_answer, verify_signature

SECRET = "s3cret"
NOW = 1_800_000_000


def good(body: bytes, ts: int = NOW) -> tuple[str, str]:
    return str(ts), sign(SECRET, str(ts), body)


def test_sign_is_zoom_formula():
    body = b'{"event":"meeting.started"}'
    expected = "v0=" + hmac.new(SECRET.encode(), b"v0:123:" + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "123", body) == expected


@pytest.mark.parametrize("body", [
    b"", b"{}", b'{"topic": "Caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x8e\xa5"}', b'{ "a" :\t1 }\n', b"   ",
    '{"topic":"\u00fcber"}'.encode("utf-8"), b'{"topic":"\\u00fcber"}',
], ids=["empty", "empty-object", "unicode", "whitespace", "only-spaces", "utf8-umlaut", "escaped-umlaut"])
def test_valid_signatures_verify_over_raw_bytes(body):
    ts, sig = good(body)
    verify_signature(SECRET, ts, sig, body, NOW, 300)


def test_reserialised_body_does_not_verify():
    body = b'{ "a" : 1 }'
    ts, sig = good(body)
    with pytest.raises(SignatureError):
        verify_signature(SECRET, ts, sig, b'{"a":1}', NOW, 300)


@pytest.mark.parametrize("timestamp,signature,now,message", [
    (None, "v0=abc", NOW, "missing x-zm-request-timestamp"),
    (str(NOW), None, NOW, "missing x-zm-signature"),
    (str(NOW), "", NOW, "missing x-zm-signature"),
    ("", "v0=abc", NOW, "missing x-zm-request-timestamp"),
    ("abc", "v0=abc", NOW, "digits only"),
    ("-5", "v0=abc", NOW, "digits only"),
    ("1.5", "v0=abc", NOW, "digits only"),
    ("9" * 40, "v0=abc", NOW, "digits only"),
    ("\u0661\u0662", "v0=abc", NOW, "digits only"),
    (str(NOW - 600), "GOOD", NOW, "more than the 300 s"),
    (str(NOW + 600), "GOOD", NOW, "more than the 300 s"),
    (str(NOW), "NOPREFIX", NOW, "must start with 'v0='"),
    (str(NOW), "v1=" + "0" * 64, NOW, "must start with 'v0='"),
    (str(NOW), "v0=" + "0" * 64, NOW, "does not match"),
    (str(NOW), "v0=zz\u00e9", NOW, "does not match"),
], ids=["no-ts", "no-sig", "empty-sig", "empty-ts", "alpha-ts", "negative-ts", "float-ts", "huge-ts",
        "arabic-digits-ts", "stale", "future", "missing-v0", "v1", "wrong", "non-ascii-sig"])
def test_bad_deliveries_are_rejected_with_a_reason(timestamp, signature, now, message):
    body = b'{"event":"meeting.started"}'
    if signature == "GOOD":
        signature = sign(SECRET, timestamp, body)
    if signature == "NOPREFIX":
        signature = sign(SECRET, timestamp, body)[3:]
    with pytest.raises(SignatureError, match=message):
        verify_signature(SECRET, timestamp, signature, body, now, 300)


def test_wrong_secret_is_rejected():
    body = b"{}"
    ts = str(NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, ts, sign("other", ts, body), body, NOW, 300)


def test_edge_of_tolerance_is_accepted():
    body = b"{}"
    ts, sig = good(body, NOW - 300)
    verify_signature(SECRET, ts, sig, body, NOW, 300)


def test_url_validation_answer_is_hmac_of_plain_token():
    answer = url_validation_answer(SECRET, "qgg8vlvZRS6UYooatFL8Aw")
    assert answer == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw",
                      "encryptedToken": hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()}
