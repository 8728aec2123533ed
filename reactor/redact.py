"""Pure: what never leaves reactor in the clear, and the one tree walk that enforces it.

- `redact`: an incoming body as stored (stream keys, passwords, tokens replaced);
- `masked`: a planned call as the history and `explain` show it (secret references, never values);
- `unseal`: a planned call as sent to Zoom (references resolved, for the HTTP call only);
- `scrub`: a text (Zoom's error message) with every revealed secret value replaced.
"""
from __future__ import annotations

from typing import Any, Callable

from .rules.model import Secret

REDACTED = "<redacted>"
SECRET_MARK = "$secret"  # a planned call carries {"$secret": "<reference>"} where a secret goes
SECRET_FIELDS = frozenset({"stream_key", "password", "passcode", "h323_password", "pstn_password",
                           "encrypted_password", "token", "access_token", "download_token"})
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
    """A copy of an event body with secret-bearing fields replaced."""
    return rewrite(body, lambda key, node: REDACTED if key in SECRET_FIELDS and node not in (None, "") else _KEEP)


def secret_ref(node: Any) -> str | None:
    """The reference a planned call's {"$secret": ref} node stands for, else None."""
    return node[SECRET_MARK] if isinstance(node, dict) and set(node) == {SECRET_MARK} else None


def masked(body: Any) -> Any:
    """A planned call's body as history and explain show it."""
    return rewrite(body, lambda _, node: _KEEP if (ref := secret_ref(node)) is None else Secret(ref).masked())


def unseal(body: Any, resolve: Callable[[str], str]) -> Any:
    """A planned call's body with each secret reference replaced by resolve(reference)."""
    return rewrite(body, lambda _, node: _KEEP if (ref := secret_ref(node)) is None else resolve(ref))


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret value in it replaced (values shorter than 4 characters are left)."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return text
