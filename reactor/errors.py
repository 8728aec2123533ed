"""The one exception tree of reactor. Every message says what was wrong and what to do.

    ReactorError
     +-- ConfigError        a setting is missing or invalid; start-up stops
     +-- RulesError         rule files are invalid; carries every problem found
     |    +-- YamlProblem    one file is not the YAML reactor reads (with its line)
     +-- SignatureError     a delivery is not from Zoom (answered 401)
     +-- PayloadError       a delivery is not a usable Zoom event (answered 4xx)
     +-- StoreError         the database did not answer (answered 503, Zoom retries)
     |    +-- SchemaError    the database holds a schema this reactor does not know; run migrate
     +-- SecretError        an enc: value or ${NAME} cannot be resolved
     +-- NotSent            a call abandoned before it went out (its job's lease was lost)
     +-- ZoomError          a call to Zoom got no answer; `retryable` says whether trying later can help
          +-- ZoomUnreachable  no connection, or no answer within the timeout (retryable)
          +-- TokenError       the OAuth token endpoint refused or failed
"""
from __future__ import annotations


class ReactorError(Exception):
    """Base of every error reactor raises on purpose."""


class ConfigError(ReactorError):
    """A setting is missing or invalid."""


class RulesError(ReactorError):
    """Rule files are invalid. `problems` lists every one, formatted file:line: rule "name": what."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid rules:\n" + "\n".join(f"  {p}" for p in self.problems))


class YamlProblem(RulesError):
    """A rule file is not the YAML reactor reads; `line` is where (1-based)."""

    def __init__(self, line: int, message: str):
        self.line, self.message = line, message
        super().__init__([f"line {line}: {message}"])


class SignatureError(ReactorError):
    """The delivery's signature or timestamp does not verify."""


class PayloadError(ReactorError):
    """The body is not a Zoom event reactor can accept. `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


class StoreError(ReactorError):
    """The store could not complete an operation; nothing was committed."""


class SchemaError(StoreError):
    """The database's schema is not the one this reactor knows."""


class SecretError(ReactorError):
    """A secret reference in a rule cannot be resolved."""


class NotSent(ReactorError):
    """A call to Zoom was abandoned before it was sent: the dispatcher no longer holds its job."""


class ZoomError(ReactorError):
    """A call to Zoom (or its token endpoint) ended without a usable answer."""

    retryable = True

    def __init__(self, message: str, retryable: bool | None = None):
        if retryable is not None:
            self.retryable = retryable
        super().__init__(message)


class ZoomUnreachable(ZoomError):
    """No connection to Zoom, or no answer within the timeout: worth trying again later."""


class TokenError(ZoomError):
    """The OAuth token endpoint refused (not retryable: fix the credentials) or failed (retryable)."""
