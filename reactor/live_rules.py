"""The rule set in force in a process: loaded, stamped, reloaded when the files change, and
inherited across fork from the gunicorn master.

The master validates the rules once (start-up stops on errors) and again on SIGHUP; workers forked
afterwards inherit the last valid set, so an invalid edit never takes a worker down. `_validated`
is the one piece of module-level state in reactor, and it is written at boot only.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

from .errors import RulesError, SecretError
from .logs import log
from .rules.load import load_rules, rule_files
from .rules.match import RuleSet
from .rules.model import Secret
from .secrets import resolve_secret
from .settings import Settings

_validated: tuple[RuleSet, tuple] | None = None


def files_stamp(path: str) -> tuple:
    """What changes when a rule file is edited, added or removed."""
    try:
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in rule_files(path))
    except (RulesError, OSError):
        return ()


def load_live(settings: Settings) -> RuleSet:
    """The rules to serve with (raises RulesError). For real, every ${NAME} must be set and every enc:
    value decrypt. In dry run, which sends nothing, they need not: such a value is shown as unset in the
    planned calls (and so in the history), and a warning names it."""
    rules = load_rules(settings.rules_path, secret_key=settings.secret_key, resolve_secrets=not settings.dry_run)
    return _mark_unset_secrets(rules, settings.secret_key) if settings.dry_run else rules


def _mark_unset_secrets(rules: RuleSet, secret_key: str) -> RuleSet:
    """The rule set with each secret that does not resolve here replaced by the text
    '<secret ${NAME} unset>' (or '<secret enc:... unavailable>'), with a warning for each."""
    unset: dict[str, str] = {}

    def mark(value):
        if not isinstance(value, Secret):
            return value
        try:
            resolve_secret(value.ref, os.environ, secret_key)
            return value
        except SecretError as exc:
            shown = value.masked()[:-1] + (" unavailable>" if value.ref.startswith("enc:") else " unset>")
            unset.setdefault(shown, str(exc))
            return shown

    changed = []
    for rule in rules.rules:
        actions = tuple(replace(a, args=tuple((name, mark(value)) for name, value in a.args)) for a in rule.actions)
        changed.append(replace(rule, actions=actions) if actions != rule.actions else rule)
    if not unset:
        return rules
    notes = tuple(f"dry run: {shown} in the planned calls ({why})" for shown, why in unset.items())
    return RuleSet(rules=tuple(changed), warnings=tuple(rules.warnings) + notes, files=rules.files)


def validate(settings: Settings) -> RuleSet:
    """In the gunicorn master: load the rules (raises RulesError) and keep them for the workers."""
    global _validated
    stamp = files_stamp(settings.rules_path)
    _validated = (load_live(settings), stamp)
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
        rules = load_live(self.settings)
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
