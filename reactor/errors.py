"""The one exception tree of reactor. Every message says what was wrong and what to do.

    ReactorError
     +-- ConfigError        a setting is missing or invalid; start-up stops
     +-- RulesError         rule files are invalid; carries every problem found
     +-- SignatureError     a delivery is not from Zoom (answered 401)
     +-- PayloadError       a delivery is not a usable Zoom event (answered 4xx)
     +-- StoreError         the database did not answer (answered 503, Zoom retries)
     |    +-- SchemaError    the database holds a schema this reactor does not know; run migrate
     +-- SecretError        an enc: value or ${NAME} cannot be resolved
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
