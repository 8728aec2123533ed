"""Secret values in rule files: `${NAME}` from the environment, `enc:` tokens sealed with Fernet.

Rules keep the reference, never the value: the value is produced only for the HTTP call,
so neither the database, the history, the logs nor `explain` can hold it.
"""
from __future__ import annotations

import re
from typing import Mapping

from .errors import SecretError

ENC_PREFIX = "enc:"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# reactor's own settings (and the database's): a rule sends its secrets to Zoom, where a stream key is
# shown to hosts and co-hosts, so a rule may not name these.
OWN_SETTINGS = frozenset({"DATABASE_URL", "PORT", "WEB_CONCURRENCY", "PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE"})
OWN_PREFIXES = ("ZOOM_", "REACTOR_", "GUNICORN_")


def refuse_own_setting(name: str) -> None:
    """Raise SecretError when `name` is one of reactor's own settings, which no rule may send to Zoom."""
    if name in OWN_SETTINGS or name.startswith(OWN_PREFIXES):
        raise SecretError(f"${{{name}}} is one of reactor's own settings, not a rule secret: a rule's value is "
                          f"sent to Zoom, where others can read it; put the value in its own variable "
                          f"(e.g. ${{YOUTUBE_STREAM_KEY}}) or an enc: value")


def keygen() -> str:
    """A new REACTOR_SECRET_KEY."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


def encrypt(value: str, key: str) -> str:
    """An `enc:` token for `value` under `key`."""
    return ENC_PREFIX + _fernet(key).encrypt(value.encode("utf-8")).decode("ascii")


def resolve_secret(ref: str, env: Mapping[str, str], key: str, own: bool = False) -> str:
    """The value behind a `${NAME}` template or an `enc:` token; SecretError says what is missing.
    `own`: the reference is reactor's own credential (an accounts file), which may name any variable.
    Spaces around a variable's or a decrypted value are dropped, as the settings' are: no token, key or URL
    has them, and a secret mounted from a file (Kubernetes `--from-file`) ends in a newline."""
    if ref.startswith(ENC_PREFIX):
        from cryptography.fernet import InvalidToken

        if not key:
            raise SecretError("an enc: value needs REACTOR_SECRET_KEY (the key `python -m reactor keygen` made)")
        try:
            return _fernet(key).decrypt(ref[len(ENC_PREFIX):].encode("ascii")).decode("utf-8").strip()
        except (InvalidToken, ValueError, UnicodeError):
            raise SecretError("an enc: value does not decrypt with REACTOR_SECRET_KEY: "
                              "re-create it with `python -m reactor encrypt`") from None
    if "${" in ref and not _ENV_REF.search(ref):
        raise SecretError("'${' must be followed by a variable NAME and '}'")

    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if not own:
            refuse_own_setting(name)
        if name not in env:
            raise SecretError(f"environment variable {name} is not set: set it where reactor runs")
        return env[name].strip()

    return _ENV_REF.sub(substitute, ref)


def env_names(ref: str) -> list[str]:
    """The environment variables a `${NAME}` reference reads (none for an `enc:` token)."""
    return [] if ref.startswith(ENC_PREFIX) else _ENV_REF.findall(ref)


def check_secret(ref: str, env: Mapping[str, str], key: str, resolve: bool = True, own: bool = False) -> None:
    """Raise SecretError unless `ref` resolves now (or, without `resolve`, is well formed). `own`: as for
    resolve_secret."""
    for name in _ENV_REF.findall(ref) if not ref.startswith(ENC_PREFIX) and not own else ():
        refuse_own_setting(name)
    if resolve:
        resolve_secret(ref, env, key, own)
    elif ref.startswith(ENC_PREFIX):
        if len(ref) <= len(ENC_PREFIX):
            raise SecretError("an enc: value is empty: make one with `python -m reactor encrypt`")
    elif not _ENV_REF.search(ref) or ref.count("${") != len(_ENV_REF.findall(ref)):
        raise SecretError("'${' must be followed by a variable NAME and '}'")


def _fernet(key: str):
    from cryptography.fernet import Fernet

    try:
        return Fernet(key.encode("ascii"))
    except (ValueError, UnicodeError):
        raise SecretError("REACTOR_SECRET_KEY is not a Fernet key: make one with `python -m reactor keygen`") from None
