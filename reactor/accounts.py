"""Pure (but for reading its file): the Zoom accounts one reactor serves, and which of them a delivery is from.

Each account has a name (its URL: /webhooks/zoom/<name>), its Zoom account_id, the Server-to-Server
OAuth credentials its actions run with, its app's Secret Token(s) and its pacing rate. Without an
accounts file (REACTOR_ACCOUNTS) there is one implicit account, `default`, from the ZOOM_* settings.
A problem in the file reads like a rule file's: `file:line: account "name": what is wrong`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .errors import PayloadError, RulesError, SecretError, SignatureError
from .events import Event
from .rules.source import LList, LMap, YamlProblem, parse_yaml, suggest
from .secrets import ENC_PREFIX, check_secret, resolve_secret
from .signature import verify_signature

DEFAULT = "default"  # the implicit account of the single-account settings
ACCOUNT_KEYS = ("name", "account_id", "client_id", "client_secret", "secret_tokens", "rate", "description")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ACCOUNT_ID_HINT = re.compile(rb'"account_id"\s*:\s*"([^"\\]{1,200})"')


@dataclass(frozen=True)
class Account:
    name: str
    account_id: str                     # Zoom's; "" for an implicit account without ZOOM_ACCOUNT_ID (dry run)
    client_id: str = ""
    client_secret: str = field(default="", repr=False)       # the value (a reference in `check`)
    secret_tokens: tuple[str, ...] = field(default=(), repr=False)  # new first; several while rotating
    rate: float = 30.0                  # Light-API calls per second, all processes together
    source: str = ""                    # file:line of its entry; "" for the implicit account


@dataclass(frozen=True)
class AccountSet:
    accounts: tuple[Account, ...]
    path: str = ""                      # the accounts file; "" for the implicit account
    by_name: dict = field(init=False, repr=False, compare=False)
    by_id: dict = field(init=False, repr=False, compare=False)
    by_token: dict = field(init=False, repr=False, compare=False)  # Secret Token -> account (each token is one's)

    def __post_init__(self):
        object.__setattr__(self, "by_name", {a.name: a for a in self.accounts})
        object.__setattr__(self, "by_id", {a.account_id: a for a in self.accounts if a.account_id})
        object.__setattr__(self, "by_token", {t: a for a in self.accounts for t in a.secret_tokens})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    def for_job(self, key: str) -> Account | None:
        """The account a job's `account` names: by name, or by Zoom account_id (jobs queued before
        accounts had names carry the event's account_id)."""
        return self.by_name.get(key) or self.by_id.get(key)


def single_account(account_id: str, client_id: str, client_secret: str, secret_tokens: Sequence[str],
                   rate: float) -> AccountSet:
    """The implicit account `default` of ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET and
    ZOOM_WEBHOOK_SECRET_TOKEN: what a deployment without an accounts file serves."""
    return AccountSet((Account(DEFAULT, account_id, client_id, client_secret, tuple(secret_tokens), rate),))


def verifying_account(accounts: AccountSet, timestamp: str | None, signature: str | None, raw: bytes, now: float,
                      tolerance: int, name: str | None = None) -> tuple[Account, str]:
    """The account whose Secret Token signs `raw`, and that token; raise SignatureError when none does.

    `name` (the URL's /webhooks/zoom/<name>): only that account's tokens verify; an unknown name is a
    PayloadError (404). Without it every account's tokens are tried, first those of the account the
    (not yet verified) body's account_id names: a hint for speed only, the verified token decides."""
    if name is not None:
        account = accounts.by_name.get(name)
        if account is None:
            raise PayloadError(f"no account named {name!r} here: the URL is /webhooks/zoom/<name> with a name "
                               f"from the accounts file, or /webhooks/zoom", 404)
        return account, verify_signature(account.secret_tokens, timestamp, signature, raw, now, tolerance)
    hint = _ACCOUNT_ID_HINT.search(raw)
    hinted = accounts.by_id.get(hint.group(1).decode("utf-8", "replace")) if hint else None
    if hinted is not None and len(accounts.accounts) > 1:
        try:
            return hinted, verify_signature(hinted.secret_tokens, timestamp, signature, raw, now, tolerance)
        except SignatureError:
            pass  # another account's token may sign it: all are tried below
    secret = verify_signature(tuple(accounts.by_token), timestamp, signature, raw, now, tolerance)
    return accounts.by_token[secret], secret


def foreign_note(account: Account, event: Event) -> str:
    """Why `event` plans no call although its rules match: it names a Zoom account other than the one
    whose Secret Token verified it (that account's credentials cannot act on it); "" when it does not."""
    if not account.account_id or not event.account_id or event.account_id == account.account_id:
        return ""
    whose = "ZOOM_ACCOUNT_ID's" if not account.source else f"account {account.name}'s ({account.account_id})"
    return (f"from Zoom account {event.account_id}, not {whose}: no call made; it would fail with this "
            f"app's credentials")


# -- the accounts file -------------------------------------------------------------------------


def load_accounts(path: str, env: Mapping[str, str], secret_key: str = "", resolve: bool = True,
                  default_rate: float = 30.0) -> AccountSet:
    """Read and validate the accounts file; raise RulesError listing every problem (file:line).

    With `resolve` (serving) every secret reference must resolve here and the accounts hold the values;
    without (`check`), only the references' form is checked and the accounts hold the references."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([f"{path}: cannot read the accounts file (REACTOR_ACCOUNTS): {exc}"]) from None
    parser = _AccountsParser(path, env, secret_key, resolve, default_rate)
    parser.parse(text)
    if parser.problems:
        raise RulesError(parser.problems)
    return AccountSet(tuple(parser.accounts), path=path)


class _AccountsParser:
    def __init__(self, file: str, env: Mapping[str, str], secret_key: str, resolve: bool, default_rate: float):
        self.file, self.env, self.secret_key, self.resolve, self.default_rate = file, env, secret_key, resolve, default_rate
        self.accounts: list[Account] = []
        self.problems: list[str] = []
        self.name = ""
        self.seen: dict[str, dict] = {"name": {}, "account_id": {}, "token": {}}

    def problem(self, line: int, message: str) -> None:
        who = f' account "{self.name}":' if self.name else ""
        self.problems.append(f"{self.file}:{line}:{who} {message}")

    def parse(self, text: str) -> None:
        try:
            doc = parse_yaml(text)
        except YamlProblem as exc:
            self.problem(exc.line, exc.message)
            return
        if not isinstance(doc, LMap) or not isinstance(doc.get("accounts"), LList) or not doc["accounts"]:
            self.problem(getattr(doc, "line", 1) or 1, "an accounts file is a mapping with an 'accounts:' list "
                                                       "(each item starts with '- name:')")
            return
        for key in doc:
            if key != "accounts":
                self.problem(doc.line_of(key), f"unknown top-level key {key!r}{suggest(key, ('accounts',))}")
        items = doc["accounts"]
        for index, item in enumerate(items):
            self.name = ""
            if not isinstance(item, LMap):
                self.problem(items.line_of(index), "each account is a mapping with name, account_id, client_id, "
                                                   "client_secret and secret_tokens")
                continue
            account = self.parse_account(item)
            if account is not None:
                self.accounts.append(account)

    def parse_account(self, item: LMap) -> Account | None:
        before = len(self.problems)
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            self.problem(item.line_of("name"), "an account needs a 'name:' of lower-case letters, digits, - and _ "
                                               "(at most 40; it is the end of its URL /webhooks/zoom/<name>)")
        else:
            self.name = name
            self.unique("name", name, item.line_of("name"), "name")
        for key in item:
            if key not in ACCOUNT_KEYS:
                self.problem(item.line_of(key), f"unknown key {key!r}{suggest(key, ACCOUNT_KEYS)}")
        account_id = self.text(item, "account_id", "the Account ID on the app's App Credentials page")
        if account_id:
            self.unique("account_id", account_id, item.line_of("account_id"), "account_id")
        client_id = self.text(item, "client_id", "the Client ID on the app's App Credentials page")
        client_secret = self.secret(item, "client_secret", item.get("client_secret"), item.line_of("client_secret"))
        tokens = self.tokens(item)
        rate = self.rate(item)
        if len(self.problems) > before:
            return None
        return Account(name, account_id, client_id, client_secret, tokens, rate, f"{self.file}:{item.line}")

    def unique(self, kind: str, value: str, line: int, what: str) -> None:
        first = self.seen[kind].setdefault(value, line)
        if first != line:
            shown = "" if kind == "token" else f" {value!r}"
            self.problem(line, f"duplicate {what}{shown}: the first is at {self.file}:{first}")

    def text(self, item: LMap, key: str, hint: str) -> str:
        value = item.raw.get(key) if key in item and not isinstance(item[key], (LMap, LList)) else None
        if not isinstance(value, str) or not value.strip():
            self.problem(item.line_of(key), f"'{key}' is missing: copy {hint}")
            return ""
        return value.strip()

    def tokens(self, item: LMap) -> tuple[str, ...]:
        value, line = item.get("secret_tokens"), item.line_of("secret_tokens")
        refs = list(value) if isinstance(value, LList) else [value] if value is not None else []
        if not refs:
            self.problem(line, "'secret_tokens' is missing: the reference to the app's Secret Token (Features page), "
                               "e.g. [${EMEA_WEBHOOK_SECRET_TOKEN}]; while you rotate it, the new one and the old one")
            return ()
        out = []
        for index, ref in enumerate(refs):
            here = value.line_of(index) if isinstance(value, LList) else line
            resolved = self.secret(item, "secret_tokens", ref, here)
            if resolved:
                self.unique("token", resolved, here, "Secret Token (two accounts or two items share one)")
                out.append(resolved)
        return tuple(out)

    def secret(self, item: LMap, key: str, ref, line: int) -> str:
        """The value of a secret reference (or the reference, without `resolve`); a problem when it is
        missing, written out, or does not resolve. A written-out value is never repeated in the problem."""
        if ref is None or isinstance(ref, (LMap, LList)) or str(ref).strip() == "":
            self.problem(line, f"'{key}' is missing: write ${{NAME}} (an environment variable that holds it) or "
                               f"an enc: value (`python -m reactor encrypt`)")
            return ""
        ref = str(ref).strip()
        if not ref.startswith(ENC_PREFIX) and "${" not in ref:
            self.problem(line, f"'{key}' is written out in the file: a secret must not be kept in git; put it in "
                               f"an environment variable and write ${{NAME}}, or write an enc: value "
                               f"(`python -m reactor encrypt`)")
            return ""
        try:
            check_secret(ref, self.env, self.secret_key, resolve=self.resolve, own=True)
            return resolve_secret(ref, self.env, self.secret_key, own=True) if self.resolve else ref
        except SecretError as exc:
            self.problem(line, f"{key}: {exc}")
            return ""

    def rate(self, item: LMap) -> float:
        if "rate" not in item:
            return self.default_rate
        value = item["rate"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0.01:
            self.problem(item.line_of("rate"), "'rate' is the account's Light-API calls per second: a number, at "
                                               "least 0.01 (Zoom's limits depend on the account's plan)")
            return self.default_rate
        return float(value)
