"""Pure: what never leaves reactor in the clear, and the one tree walk that enforces it.

- `redact`: an incoming body as stored (stream keys, passwords, tokens and URL passcodes replaced);
- `masked`: a planned call as the history and `explain` show it (secret references, never values; a
  value written literally in a rule file under a secret-bearing key is replaced too);
- `unseal`: a planned call as sent to Zoom (references resolved, for the HTTP call only);
- `scrub`: a text (Zoom's error message) with every revealed secret value replaced, even one cut at
  the text's edge, and anything shaped like an OAuth access token.

This module imports nothing of reactor's: the rule model uses it to keep failing conditions'
"saw ..." text free of secrets.
"""
from __future__ import annotations

import re
from typing import Any, Callable

REDACTED = "<redacted>"
SECRET_MARK = "$secret"  # a planned call carries {"$secret": "<reference>"} where a secret goes
SECRET_FIELDS = frozenset({"stream_key", "password", "passcode", "h323_password", "pstn_password",
                           "encrypted_password", "recording_play_passcode", "token", "access_token",
                           "refresh_token", "download_token"})
# URL query parameters that carry a secret: a meeting's passcode (join_url's pwd=) and the host's start
# token (start_url's zak=). The URL is kept; the value is replaced.
_URL_SECRET = re.compile(r"([?&](?:pwd|zak)=)[^&#\s]+", re.IGNORECASE)
SCRUB_MIN = 4  # secret values (and cut-off pieces of them) shorter than this are left alone
# Zoom's OAuth access tokens are JWTs (eyJ...); a bearer header carries any token. Either, even cut short.
_TOKEN_SHAPED = re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]*){0,2}|(?i:bearer)\s+[A-Za-z0-9_\-.~+/=]{8,}")
_KEEP = object()


def rewrite(value: Any, replace: Callable[[str | None, Any], Any]) -> Any:
    """A copy of a JSON-like tree in which each node for which replace(key, node) is not _KEEP is
    replaced by that answer (and not walked into). `key` is the node's key in its mapping, else None."""

    def walk(key: str | None, node: Any) -> Any:
        answer = replace(key, node)
        if answer is not _KEEP:
            return answer
        if isinstance(node, dict):
            return {k: walk(k, v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(None, v) for v in node]
        return node

    return walk(None, value)


def redact(body: Any) -> Any:
    """A copy of an event body with secret-bearing fields replaced, and in every text the value of a
    URL's pwd= (a meeting passcode, as in join_url) or zak= (a host's start token, as in start_url)."""
    def replace(key: str | None, node: Any) -> Any:
        if key in SECRET_FIELDS and node not in (None, ""):
            return REDACTED
        if isinstance(node, str):
            return _redact_text(node)
        return _KEEP

    return rewrite(body, replace)


def _redact_text(text: str) -> str:
    """A text with the value of each URL's pwd= or zak= replaced."""
    return _URL_SECRET.sub(lambda m: m.group(1) + REDACTED, text) if "=" in text else text


def redact_at(path: str, value: Any) -> Any:
    """`value`, found at the dotted field `path`, as it may be shown: redacted when the path names a
    secret-bearing field, with secret-bearing fields replaced when it is an object or a list."""
    if path.rsplit(".", 1)[-1] in SECRET_FIELDS and isinstance(value, (str, int, float)) and value != "":
        return REDACTED
    if isinstance(value, str):  # redact()'s walk of a lone text, without the walk (a verdict shows topics)
        return _redact_text(value)
    return redact(value) if isinstance(value, (dict, list)) else value


def secret_ref(node: Any) -> str | None:
    """The reference a planned call's {"$secret": ref} node stands for, else None."""
    return node[SECRET_MARK] if isinstance(node, dict) and set(node) == {SECRET_MARK} else None


def masked_ref(ref: str) -> str:
    """How a secret reference is shown: `<secret ${NAME}>`, or `<secret enc:...>` for a sealed value."""
    return f"<secret {ref}>" if "${" in ref else "<secret enc:...>"


def masked(body: Any) -> Any:
    """A planned call's body as history, attempts, explain and logs show it: a secret reference as
    `<secret ${NAME}>`, and a value of a secret-bearing key (a stream_key written literally in a rule
    file, which `check` warns about) as <redacted>. The stored call itself keeps the value: a worker
    process, which has no rules, sends it from there."""
    def replace(key: str | None, node: Any) -> Any:
        if (ref := secret_ref(node)) is not None:
            return masked_ref(ref)
        if key in SECRET_FIELDS and isinstance(node, (str, int, float)) and not isinstance(node, bool) and node != "" \
                and not _UNSET_MARK.fullmatch(str(node)):
            return REDACTED
        return _KEEP

    return rewrite(body, replace)


# what a dry run plans in place of a secret it cannot resolve (reactor.live_rules): a mark, not a value
_UNSET_MARK = re.compile(r"<secret (?:\$\{[A-Za-z_][A-Za-z0-9_]*\}|enc:\.\.\.) (?:unset|unavailable)>")


def literal_secrets(body: Any) -> list[str]:
    """The values of secret-bearing keys written literally in a planned call's body (to scrub them from
    whatever Zoom echoes back)."""
    found: list[str] = []

    def collect(key: str | None, node: Any) -> Any:
        if key in SECRET_FIELDS and isinstance(node, str) and node:
            found.append(node)
        return _KEEP

    rewrite(body, collect)
    return found


def unseal(body: Any, resolve: Callable[[str], str]) -> Any:
    """A planned call's body with each secret reference replaced by resolve(reference)."""
    return rewrite(body, lambda _, node: _KEEP if (ref := secret_ref(node)) is None else resolve(ref))


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret value in it replaced, and with anything shaped like an access token
    replaced. A text cut to a length may end inside a secret (or begin inside one): that piece goes too.
    Values shorter than SCRUB_MIN characters are left alone."""
    for value in sorted((v for v in secrets if v and len(v) >= SCRUB_MIN), key=len, reverse=True):
        text = text.replace(value, REDACTED)
        for size in range(len(value) - 1, SCRUB_MIN - 1, -1):  # the longest cut piece at either edge
            if text.endswith(value[:size]):
                text = text[:-size] + REDACTED
                break
        for size in range(len(value) - 1, SCRUB_MIN - 1, -1):
            if text.startswith(value[-size:]):
                text = REDACTED + text[size:]
                break
    return _TOKEN_SHAPED.sub(REDACTED, text)
