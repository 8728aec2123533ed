"""Settings: one frozen value read from the environment, with errors that name the variable."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Mapping

from .errors import ConfigError

DEFAULT_SQLITE_PATH = "var/reactor.db"
CONSOLE_PASSWORD_MIN = 12

CALLS = "unless REACTOR_DRY_RUN=1"      # required by the processes that call Zoom (web, worker)
WEBHOOKS = "in web processes"            # required where webhooks are received (not a dedicated worker)
_DRY_RUN_HINT = "or set REACTOR_DRY_RUN=1 to record actions without calling Zoom"
_CREDENTIALS = "on your Server-to-Server OAuth app's App Credentials page"


@dataclass(frozen=True)
class Setting:
    """One environment variable reactor reads. SETTINGS is the one list of them: Settings.from_env reads
    through it, and the deploy files (app.json, render.yaml, fly.toml, compose.yaml) are tested against it."""

    name: str
    description: str
    default: str = ""             # as text; "" means unset
    required: str = ""            # "" optional, WEBHOOKS or CALLS: when it must be set
    secret: bool = False          # never printed; a PaaS should store it as a secret
    field: str | None = None      # the Settings attribute; None when gunicorn's config reads it
    kind: str = "text"            # text | url | flag | int | float | choice | database_url | tokens
    minimum: float = 0
    choices: tuple = ()
    hint: str = ""                # for a choice: what to use; for a required one: where the value comes from


SETTINGS: tuple[Setting, ...] = (
    Setting("ZOOM_WEBHOOK_SECRET_TOKEN", "the Zoom app's Secret Token: verifies every webhook; while you rotate "
            "it, the new and the old one separated by a comma (new first)", required=WEBHOOKS,
            secret=True, field="webhook_secrets", kind="tokens",
            hint="the Secret Token on your Zoom app's Features page (Event Subscriptions)"),
    Setting("REACTOR_DRY_RUN", "1: record and log actions, call nothing", "0", field="dry_run", kind="flag"),
    Setting("ZOOM_ACCOUNT_ID", "Server-to-Server OAuth Account ID", required=CALLS, field="account_id",
            hint=f"the Account ID {_CREDENTIALS}"),
    Setting("ZOOM_CLIENT_ID", "Server-to-Server OAuth Client ID", required=CALLS, field="client_id",
            hint=f"the Client ID {_CREDENTIALS}"),
    Setting("ZOOM_CLIENT_SECRET", "Server-to-Server OAuth Client Secret", required=CALLS, secret=True,
            field="client_secret", hint=f"the Client Secret {_CREDENTIALS}"),
    Setting("REACTOR_DISPATCH", "inline: web processes also dispatch; off: only `python -m reactor worker` does",
            "inline", field="dispatch", kind="choice", choices=("inline", "off"),
            hint="use 'inline' (web processes dispatch) or 'off'"),
    Setting("REACTOR_INGEST", "inline: each web process matches and plans what it acknowledged, a moment after "
            "its 200; off: web processes only acknowledge and `python -m reactor worker` ingests", "inline",
            field="ingest", kind="choice", choices=("inline", "off"),
            hint="use 'inline' (web processes ingest) or 'off'"),
    Setting("REACTOR_INBOX_LIMIT", "acknowledged deliveries waiting to be ingested above which webhooks are "
            "answered 503 (Zoom retries them later)", "50000", field="inbox_limit", kind="int", minimum=100),
    Setting("DATABASE_URL", "sqlite:///path or postgresql://... (postgres:// accepted)", f"sqlite:///{DEFAULT_SQLITE_PATH}",
            secret=True, field="database_url", kind="database_url"),
    Setting("REACTOR_SIGNATURE_TOLERANCE", "accepted age of a webhook's signature, seconds; covers Zoom's retries "
            "(+85 min) and must be shorter than REACTOR_HISTORY_DAYS", "7200",
            field="signature_tolerance", kind="int", minimum=1),
    Setting("REACTOR_DISPATCH_THREADS", "dispatcher threads per process", "8", field="dispatch_threads", kind="int",
            minimum=1),
    Setting("REACTOR_ZOOM_RATE", "Zoom calls per second per Zoom account, all processes together", "30",
            field="zoom_rate", kind="float", minimum=0.01),
    Setting("REACTOR_ACTION_DEADLINE", "seconds after the event after which an action is given up", "1800",
            field="action_deadline", kind="int", minimum=1),
    Setting("REACTOR_HISTORY_DAYS", "history kept, days", "30", field="history_days", kind="int", minimum=1),
    Setting("PORT", "where gunicorn listens (PaaS set it)", "8000", field="port", kind="int", minimum=1),
    Setting("ZOOM_API_URL", "Zoom REST base URL", "https://api.zoom.us/v2", field="api_url", kind="url"),
    Setting("ZOOM_OAUTH_URL", "Zoom token endpoint", "https://zoom.us/oauth/token", field="oauth_url"),
    Setting("REACTOR_RULES", "rules folder or file", "rules", field="rules_path"),
    Setting("REACTOR_ACCOUNTS", "a YAML file of several Zoom accounts (see the README's \"Several Zoom accounts\"); "
            "unset: the one account of ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET, ZOOM_WEBHOOK_SECRET_TOKEN",
            field="accounts_path"),
    Setting("REACTOR_SECRET_KEY", "Fernet key for enc: values in rules (`python -m reactor keygen`)", secret=True,
            field="secret_key"),
    Setting("REACTOR_CONSOLE_PASSWORD", "turns the operator console on at /console and is its password (at least "
            "12 characters); unset: no console", secret=True, field="console_password"),
    Setting("REACTOR_CONSOLE_READONLY", "1: the console shows everything and changes nothing (no retries)", "0",
            field="console_readonly", kind="flag"),
    Setting("REACTOR_METRICS", "1: count Prometheus metrics and serve GET /metrics; 0: neither", "1",
            field="metrics", kind="flag"),
    Setting("REACTOR_METRICS_TOKEN", "when set, GET /metrics needs `Authorization: Bearer <this>`", secret=True,
            field="metrics_token"),
    Setting("PROMETHEUS_MULTIPROC_DIR", "where each process writes its metrics (emptied at start by gunicorn)",
            "a folder of reactor's own in /dev/shm, else var/prometheus"),
    Setting("REACTOR_ALERT_URL", "a chat incoming-webhook URL that gets reactor's alerts (dead actions, unconfirmed "
            "starts); unset: no alerts", secret=True, field="alert_url"),
    Setting("REACTOR_ALERT_FORMAT", "the chat's message format: text (Slack, Mattermost, Google Chat, Teams "
            "workflows), content (Discord)", "text", field="alert_format", kind="choice", choices=("text", "content"),
            hint="use 'text' (Slack, Mattermost, Google Chat, Teams workflows) or 'content' (Discord)"),
    Setting("REACTOR_CONFIRM_TIMEOUT", "seconds Zoom has to confirm a start (meeting.live_streaming_started) "
            "before an alert; 0: no such alert", "120", field="confirm_timeout", kind="int"),
    Setting("WEB_CONCURRENCY", "gunicorn worker processes", "one per core, at least 2"),
    Setting("REACTOR_WEB_THREADS", "gunicorn threads per worker", "16"),
    Setting("GUNICORN_LOGLEVEL", "gunicorn's own log level", "warning"),
    Setting("FORWARDED_ALLOW_IPS", "the proxy's addresses (or networks, or *): only from these are X-Forwarded-For "
            "and -Proto believed", "127.0.0.1,::1"),
)
SETTING = {s.name: s for s in SETTINGS}
# With REACTOR_ACCOUNTS, each account's ids are in the file: these would say which account is meant twice.
# (Its secrets may still come from ZOOM_CLIENT_SECRET or ZOOM_WEBHOOK_SECRET_TOKEN, as ${...} in the file.)
FILE_ACCOUNT_SETTINGS = ("ZOOM_ACCOUNT_ID", "ZOOM_CLIENT_ID")


@dataclass(frozen=True)
class Settings:
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)  # new first; more than one while rotating
    account_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    api_url: str = "https://api.zoom.us/v2"
    oauth_url: str = "https://zoom.us/oauth/token"
    rules_path: str = "rules"
    accounts_path: str = ""            # "": one implicit account from the ZOOM_* settings
    database_url: str = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    signature_tolerance: int = 7200    # covers Zoom's retries (+5, +25, +85 min) if they keep the first timestamp
    dry_run: bool = False
    dispatch: str = "inline"          # inline: web processes dispatch; off: only `python -m reactor worker`
    ingest: str = "inline"            # inline: web processes ingest what they acknowledged; off: only the worker
    inbox_limit: int = 50000          # inbox rows above which webhooks are answered 503
    dispatch_threads: int = 8
    zoom_rate: float = 30.0            # calls per second per Zoom account
    action_deadline: int = 1800        # seconds after the event; later, an action is dead
    history_days: int = 30
    secret_key: str = field(default="", repr=False)
    port: int = 8000                   # where gunicorn listens (PaaS set PORT); `send` posts there
    console_password: str = field(default="", repr=False)  # "": no console
    console_readonly: bool = False
    metrics: bool = True
    metrics_token: str = field(default="", repr=False)
    alert_url: str = field(default="", repr=False)
    alert_format: str = "text"         # text: {"text": ...}; content: {"content": ...} (Discord)
    confirm_timeout: int = 120         # seconds; 0: no alert for an unconfirmed start

    @property
    def webhook_secret(self) -> str:
        """The Secret Token Zoom signs with (the first of ZOOM_WEBHOOK_SECRET_TOKEN's), "" when unset."""
        return self.webhook_secrets[0] if self.webhook_secrets else ""

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(api_url={self.api_url!r}, rules_path={self.rules_path!r}, dry_run={self.dry_run})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, webhooks: bool = True, zoom: bool = True,
                 **overrides) -> "Settings":
        """Read every setting of SETTINGS from `env` (default os.environ); raise one ConfigError naming every
        missing or invalid setting at once (its `problems` lists them). A command asks for the part it needs:
        `webhooks=False` (a dedicated worker, the tools) does not need the webhook secret, `zoom=False`
        (the tools) not the Zoom credentials."""
        env = os.environ if env is None else env
        problems: list[str] = []
        values: dict = {}
        accounts_file = env.get("REACTOR_ACCOUNTS", "").strip()
        for setting in SETTINGS:
            if setting.field is None:
                continue
            raw = env.get(setting.name, "").strip()
            if raw and accounts_file and setting.name in FILE_ACCOUNT_SETTINGS:
                problems.append(f"{setting.name} is set and so is REACTOR_ACCOUNTS: declare that account in the "
                                f"accounts file (e.g. name: default) and unset {setting.name}")
            if raw == "" and setting.required and not accounts_file and _needed(setting, webhooks, zoom,
                                                                               values.get("dry_run")):
                problems.append(missing_text(setting))
            try:
                values[setting.field] = parse(setting, raw)
            except ConfigError as exc:
                problems.append(str(exc))
                values[setting.field] = None
        tolerance, kept = values.get("signature_tolerance"), values.get("history_days")
        if tolerance is not None and kept is not None and tolerance >= kept * 86400:
            problems.append(f"REACTOR_SIGNATURE_TOLERANCE ({tolerance} s) must be shorter than REACTOR_HISTORY_DAYS "
                            f"({kept} days): a replayed delivery is refused as a duplicate only while the first "
                            f"is remembered")
        password = values.get("console_password") or ""
        if password and len(password) < CONSOLE_PASSWORD_MIN:
            problems.append(f"REACTOR_CONSOLE_PASSWORD is {len(password)} characters: use at least "
                            f"{CONSOLE_PASSWORD_MIN} (e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(18))'`)")
        if problems:
            raise config_error(problems)
        settings = cls(**values)
        return replace(settings, **overrides) if overrides else settings


def _needed(setting: Setting, webhooks: bool, zoom: bool, dry_run) -> bool:
    if setting.required == WEBHOOKS:
        return webhooks
    return zoom and dry_run is False  # an invalid REACTOR_DRY_RUN is reported itself, not as missing credentials


def parse(setting: Setting, raw: str):
    """The value of `setting` from its raw text ("" gives the default); ConfigError says what to use."""
    name, kind = setting.name, setting.kind
    if kind == "database_url":
        return normalise_database_url(raw)
    if kind == "tokens":
        return parse_tokens(name, raw)
    if raw == "":
        raw = setting.default
        if kind in ("text", "url"):
            return raw
    if kind == "url":
        return raw.rstrip("/")
    if kind == "flag":
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"{name} is {raw.lower()!r}: use 1 or 0")
    if kind == "choice":
        if raw not in setting.choices:
            raise ConfigError(f"{name} is {raw!r}: {setting.hint}")
        return raw
    if kind in ("int", "float"):
        try:
            value = (int if kind == "int" else float)(raw)
        except ValueError:
            raise ConfigError(f"{name} is {raw!r}: it must be a number") from None
        if value < setting.minimum:
            raise ConfigError(f"{name} is {raw!r}: it must be at least {setting.minimum:g}")
        return value
    return raw


def parse_tokens(name: str, raw: str) -> tuple[str, ...]:
    """Secret Tokens separated by commas (spaces around them ignored): while one is rotated, the new one and
    the old one. An empty item is an error, as is a repeated one: both are typing mistakes."""
    if raw == "":
        return ()
    tokens = tuple(part.strip() for part in raw.split(","))
    if "" in tokens:
        raise ConfigError(f"{name} has an empty token between its commas: write the tokens separated by single "
                          f"commas, the new one first (new,old)")
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"{name} names the same token twice: write each token once, the new one first (new,old)")
    return tokens


def missing_text(setting: Setting) -> str:
    """What to say when a required setting is not set: where its value comes from."""
    message = f"{setting.name} is not set: copy it from {setting.hint}"
    return f"{message}; {_DRY_RUN_HINT}" if setting.required == CALLS else message


def config_error(problems: list[str]) -> ConfigError:
    """One ConfigError for every problem: the problem itself when there is one, else a numbered list."""
    if len(problems) == 1:
        error = ConfigError(problems[0])
    else:
        error = ConfigError(f"{len(problems)} settings need fixing:\n" + "\n".join(f"  - {p}" for p in problems))
    error.problems = list(problems)
    return error


def normalise_database_url(url: str) -> str:
    """Accept the forms PaaS give (postgres://, postgresql://, sqlite:///path); default to a local SQLite file."""
    if not url:
        return f"sqlite:///{DEFAULT_SQLITE_PATH}"
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://"):]
    if url.startswith(("postgresql://", "sqlite:///")):
        return url
    raise ConfigError(
        f"DATABASE_URL must start with sqlite:///, postgresql:// or postgres:// (got {url.split(':', 1)[0]}:...)"
    )
