"""The rule set in force in a process: loaded, stamped, reloaded when the files change, and
inherited across fork from the gunicorn master.

The master validates the rules once (start-up stops on errors) and again on SIGHUP; workers forked
afterwards inherit the last valid set, so an invalid edit never takes a worker down. `_validated`
is the one piece of module-level state in reactor, and it is written at boot only.
"""
from __future__ import annotations

import threading
import time

from .errors import RulesError
from .logs import log
from .rules.load import load_rules, rule_files
from .rules.match import RuleSet
from .settings import Settings

_validated: tuple[RuleSet, tuple] | None = None


def files_stamp(path: str) -> tuple:
    """What changes when a rule file is edited, added or removed."""
    try:
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in rule_files(path))
    except (RulesError, OSError):
        return ()


def validate(settings: Settings) -> RuleSet:
    """In the gunicorn master: load the rules (raises RulesError) and keep them for the workers."""
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


class ActiveRules:
    """The rule set in force; replaced whole on reload, kept when the new files are invalid."""

    def __init__(self, settings: Settings, current: RuleSet | None = None, stamp: tuple | None = None):
        self.settings = settings
        if current is None and _validated is not None:  # a worker: take what the master validated
            current, stamp = _validated
        self._stamp = files_stamp(settings.rules_path) if stamp is None else stamp
        self.current = current if current is not None else self._load()  # raises RulesError at start-up
        self.loaded_at = time.time()
        self.last_error = ""
        self._lock = threading.Lock()

    def _load(self) -> RuleSet:
        rules = load_rules(self.settings.rules_path, secret_key=self.settings.secret_key)
        for warning in rules.warnings:
            log("rules warning", 30, warning=warning)
        return rules

    def reload(self) -> bool:
        """Load the files again; on errors log them, keep the active set and return False."""
        with self._lock:
            self._stamp = files_stamp(self.settings.rules_path)
            try:
                new = self._load()
            except RulesError as exc:
                self.last_error = "; ".join(exc.problems)
                log("rules reload rejected; the previous rules stay active", 40, problems=exc.problems,
                    active_version=self.current.version)
                return False
            self.current, self.loaded_at, self.last_error = new, time.time(), ""
            log("rules reloaded", version=new.version, rules=len(new.rules))
            return True

    def reload_if_changed(self) -> None:
        if files_stamp(self.settings.rules_path) != self._stamp:
            self.reload()
