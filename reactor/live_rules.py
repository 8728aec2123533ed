"""The rule set and the Zoom accounts in force in a process: loaded, stamped, reloaded when the files
change, and inherited across fork from the gunicorn master. Rules name accounts, so the two are
validated together and replaced together.

The master validates the rules once (start-up stops on errors) and again on SIGHUP; workers forked
afterwards inherit the last valid set, so an invalid edit never takes a worker down. `_validated`
is the one piece of module-level state in reactor, and it is written at boot only.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

from .accounts import AccountSet, load_accounts, single_account
from .errors import RulesError, SecretError
from .logs import log
from .rules.load import load_rules, rule_files
from .rules.match import RuleSet
from .rules.model import Secret
from .secrets import resolve_secret
from .settings import Settings

_validated: tuple[RuleSet, AccountSet, tuple] | None = None


def files_stamp(path: str) -> tuple:
    """What changes when a rule file is edited, added or removed."""
    try:
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in rule_files(path))
    except (RulesError, OSError):
        return ()


def config_stamp(settings: Settings) -> tuple:
    """What changes when a rule file or the accounts file is edited, added or removed."""
    return files_stamp(settings.rules_path) + accounts_stamp(settings)


def accounts_stamp(settings: Settings) -> tuple:
    """What changes when the accounts file is edited (nothing without one)."""
    return files_stamp(settings.accounts_path) if settings.accounts_path else ()


def accounts_of(settings: Settings, resolve: bool = True) -> AccountSet:
    """The accounts file's accounts (raises RulesError), or the one implicit account of the ZOOM_* settings.
    With `resolve`, every secret reference must resolve here (its value is what the accounts hold)."""
    if not settings.accounts_path:
        return single_account(settings.account_id, settings.client_id, settings.client_secret,
                              settings.webhook_secrets, settings.zoom_rate)
    return load_accounts(settings.accounts_path, os.environ, settings.secret_key, resolve=resolve,
                         default_rate=settings.zoom_rate)


def load_live(settings: Settings) -> tuple[RuleSet, AccountSet]:
    """The rules and accounts to serve with (raises RulesError listing the problems of both). For real,
    every ${NAME} of the rules must be set and every enc: value decrypt. In dry run, which sends nothing,
    they need not: such a value is shown as unset in the planned calls (and so in the history), and a
    warning names it. The accounts' secrets must always resolve: they verify the webhooks."""
    problems, accounts = [], None
    try:
        accounts = accounts_of(settings)
    except RulesError as exc:
        problems = exc.problems
    try:
        rules = load_rules(settings.rules_path, secret_key=settings.secret_key, resolve_secrets=not settings.dry_run,
                           accounts=accounts.names if accounts else None)
    except RulesError as exc:
        problems = problems + exc.problems
    if problems:
        raise RulesError(problems)
    return (_mark_unset_secrets(rules, settings.secret_key) if settings.dry_run else rules), accounts


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
    """In the gunicorn master: load the rules and accounts (raises RulesError) and keep them for the workers."""
    global _validated
    stamp = config_stamp(settings)
    _validated = (*load_live(settings), stamp)
    return _validated[0]


def revalidate(settings: Settings) -> list[str]:
    """On SIGHUP: adopt the new rules if valid and return []; else keep the old ones, return the problems."""
    try:
        validate(settings)
        return []
    except RulesError as exc:
        return exc.problems


class ActiveRules:
    """The rule set and the accounts in force; replaced whole on reload, kept when the new files are invalid.
    `accounts` is read with `current`: a request that reads both across a reload sees rules that name an
    account removed meanwhile match nothing for it, never another account's credentials."""

    def __init__(self, settings: Settings, current: RuleSet | None = None, stamp: tuple | None = None,
                 accounts: AccountSet | None = None):
        self.settings = settings
        if current is None and _validated is not None:  # a worker: take what the master validated
            current, accounts, stamp = _validated
        self._stamp = config_stamp(settings) if stamp is None else stamp
        if current is None:
            current, accounts = self._load()  # raises RulesError at start-up
        self.current = current
        self.accounts = accounts if accounts is not None else accounts_of(settings)
        self.loaded_at = time.time()
        self.last_error = ""
        self._lock = threading.Lock()

    def _load(self) -> tuple[RuleSet, AccountSet]:
        rules, accounts = load_live(self.settings)
        for warning in rules.warnings:
            log("rules warning", 30, warning=warning)
        return rules, accounts

    def reload(self) -> bool:
        """Load the files again; on errors log them, keep the active set and return False."""
        with self._lock:
            self._stamp = config_stamp(self.settings)
            try:
                new, accounts = self._load()
            except RulesError as exc:
                self.last_error = "; ".join(exc.problems)
                log("rules reload rejected; the previous rules stay active", 40, problems=exc.problems,
                    active_version=self.current.version)
                return False
            self.current, self.accounts, self.loaded_at, self.last_error = new, accounts, time.time(), ""
            log("rules reloaded", version=new.version, rules=len(new.rules), accounts=len(accounts.accounts))
            return True

    def reload_if_changed(self) -> None:
        if config_stamp(self.settings) != self._stamp:
            self.reload()


class LiveAccounts:
    """A dedicated worker's accounts: it runs planned calls, never rules, so it reads the accounts file
    alone, and reloads it as ActiveRules does (an invalid new file is logged, the accounts in force kept)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._stamp = accounts_stamp(settings)
        self.accounts = accounts_of(settings)  # raises RulesError at start-up

    def reload_if_changed(self) -> None:
        stamp = accounts_stamp(self.settings)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.accounts = accounts_of(self.settings)
            log("accounts reloaded", accounts=len(self.accounts.accounts))
        except RulesError as exc:
            log("accounts reload rejected; the previous accounts stay active", 40, problems=exc.problems)
