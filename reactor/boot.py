"""Process-level start-up state shared between the gunicorn master and the workers it forks.

The master validates settings and rules once (start-up stops on errors) and re-validates on
SIGHUP; workers forked afterwards inherit the last valid rule set, so an invalid edit never
takes a worker down. This is the one module-level state in reactor, and it is boot-time only.
"""
from __future__ import annotations

from .errors import RulesError
from .rules.load import load_rules
from .rules.match import RuleSet
from .settings import Settings

_validated: tuple[RuleSet, tuple] | None = None


def validate(settings: Settings) -> RuleSet:
    """Load the rules in the master (raises RulesError) and keep them for the workers."""
    from .app import files_stamp

    global _validated
    stamp = files_stamp(settings.rules_path)
    _validated = (load_rules(settings.rules_path, secret_key=settings.secret_key), stamp)
    return _validated[0]


def revalidate(settings: Settings) -> list[str]:
    """On SIGHUP: adopt the new rules if valid and return []; else keep the old ones, return the problems."""
    try:
        validate(settings)
        return []
    except RulesError as exc:
        return exc.problems


def inherited_rules(settings: Settings) -> tuple[RuleSet | None, tuple | None]:
    return _validated if _validated is not None else (None, None)
