"""Pure: verify that a delivery comes from Zoom, and answer Zoom's URL validation."""
from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

from .errors import SignatureError

MAX_TIMESTAMP_DIGITS = 12


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The x-zm-signature header Zoom sends for `body` at `timestamp`."""
    message = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_signature(
    secrets: str | Sequence[str], timestamp: str | None, signature: str | None, body: bytes, now: float,
    tolerance: int
) -> str:
    """The secret with which `signature` signs `body` at `timestamp`, within `tolerance` s of `now`; raise
    SignatureError when none does. `secrets` is one Secret Token or several (during a rotation: new first,
    then old); each is compared in constant time, and all of them are always compared."""
    if not signature:
        raise SignatureError("missing x-zm-signature header: only Zoom's signed deliveries are accepted")
    if not timestamp:
        raise SignatureError("missing x-zm-request-timestamp header: only Zoom's signed deliveries are accepted")
    ts = timestamp.strip()
    if not ts.isascii() or not ts.isdigit() or len(ts) > MAX_TIMESTAMP_DIGITS:
        raise SignatureError("x-zm-request-timestamp must be Unix seconds (digits only)")
    if abs(now - int(ts)) > tolerance:
        raise SignatureError(
            f"x-zm-request-timestamp is {int(now - int(ts))} s from this server's clock, more than the "
            f"{tolerance} s allowed: check the server's clock or REACTOR_SIGNATURE_TOLERANCE"
        )
    if not signature.startswith("v0="):
        raise SignatureError("x-zm-signature must start with 'v0='")
    given = signature.strip().encode("utf-8", "replace")
    verified = None
    for secret in [secrets] if isinstance(secrets, str) else secrets:
        if hmac.compare_digest(sign(secret, ts, body).encode("ascii"), given) and verified is None:
            verified = secret
    if verified is None:
        raise SignatureError(
            "x-zm-signature does not match: check that ZOOM_WEBHOOK_SECRET_TOKEN is your app's Secret Token"
        )
    return verified


def url_validation_answer(secret: str, plain_token: str) -> dict:
    """Zoom's endpoint.url_validation challenge, answered."""
    encrypted = hmac.new(secret.encode("utf-8"), plain_token.encode("utf-8"), hashlib.sha256).hexdigest()
    return {"plainToken": plain_token, "encryptedToken": encrypted}
